// The pool's own state: the sync loop, whether its picture of the cloud can be trusted, the quota
// back-off and one throttle per kind of cloud call. Pure: listing is an actor and notifying
// subscribers an action, both supplied by src/pool with .provide().
import { assign, fromPromise, raise, setup, stateIn } from 'xstate';

/** Consecutive failed listings after which the pool's picture of the cloud is stale. */
export const staleAfterFailedListings = 3;

export type ThrottledOperation = 'create' | 'list' | 'destroy' | 'setTags';
export const throttledOperations: readonly ThrottledOperation[] = ['create', 'list', 'destroy', 'setTags'];

export interface PoolContext {
  failedListings: number;
  /** How long each throttled operation waits, set by the rate-limit error that throttled it. */
  throttleDelayMs: Record<ThrottledOperation, number>;
}

export type PoolEvent =
  | { type: 'LISTING_SUCCEEDED' }
  | { type: 'LISTING_FAILED'; reason: string }
  | { type: 'QUOTA_EXCEEDED' }
  | { type: 'RATE_LIMITED'; operation: ThrottledOperation; delayMs: number };

/** The throttle region of one kind of cloud call; its delay is named `<operation>Throttle`. */
function throttleRegion(operation: ThrottledOperation) {
  return {
    initial: 'open' as const,
    on: {
      RATE_LIMITED: {
        guard: { type: 'limits' as const, params: { operation } },
        target: '.throttled',
        reenter: true,
        actions: 'rememberThrottleDelay' as const,
      },
    },
    states: {
      open: {},
      throttled: { after: { [`${operation}Throttle` as const]: { target: 'open', actions: 'notifyChanged' as const } } },
    },
  };
}

export const poolMachine = setup({
  types: {
    context: {} as PoolContext,
    events: {} as PoolEvent,
  },
  actors: {
    // Lists the cloud and reconciles the workers with the answer; rejects if the listing failed.
    syncInstances: fromPromise<void>(async () => {
      throw new Error('pool machine: syncInstances must be supplied with .provide()');
    }),
  },
  actions: {
    notifyChanged: () => {},
    rememberThrottleDelay: assign(({ context, event }) => {
      if (event.type !== 'RATE_LIMITED') return {};
      return { throttleDelayMs: { ...context.throttleDelayMs, [event.operation]: event.delayMs } };
    }),
  },
  guards: {
    listingThrottled: stateIn('#pool.throttle.list.throttled'),
    limits: ({ event }, params: { operation: ThrottledOperation }) =>
      event.type === 'RATE_LIMITED' && event.operation === params.operation,
    staleNow: ({ context }) => context.failedListings + 1 >= staleAfterFailedListings,
  },
  delays: {
    syncInterval: 60_000,
    quotaErrorTTL: 60_000,
    createThrottle: ({ context }) => context.throttleDelayMs.create,
    listThrottle: ({ context }) => context.throttleDelayMs.list,
    destroyThrottle: ({ context }) => context.throttleDelayMs.destroy,
    setTagsThrottle: ({ context }) => context.throttleDelayMs.setTags,
  },
}).createMachine({
  id: 'pool',
  type: 'parallel',
  context: {
    failedListings: 0,
    throttleDelayMs: { create: 0, list: 0, destroy: 0, setTags: 0 },
  },
  states: {
    sync: {
      initial: 'listing',
      states: {
        listing: {
          invoke: {
            src: 'syncInstances',
            onDone: { target: 'waiting', actions: raise({ type: 'LISTING_SUCCEEDED' }) },
            onError: {
              target: 'waiting',
              actions: raise(({ event }) => ({
                type: 'LISTING_FAILED' as const,
                reason: event.error instanceof Error ? event.error.message : String(event.error),
              })),
            },
          },
        },
        waiting: {
          after: {
            syncInterval: [
              // A throttled listing would only be refused again; wait another interval.
              { guard: 'listingThrottled', target: 'waiting', reenter: true },
              { target: 'listing' },
            ],
          },
        },
      },
    },
    // Whether the pool's picture of the cloud is good enough to create instances against.
    listing: {
      initial: 'unloaded',
      states: {
        unloaded: {
          on: { LISTING_SUCCEEDED: { target: 'current', actions: 'notifyChanged' } },
        },
        current: {
          on: {
            LISTING_SUCCEEDED: { actions: assign({ failedListings: 0 }) },
            LISTING_FAILED: [
              { guard: 'staleNow', target: 'stale', actions: [assign({ failedListings: ({ context }) => context.failedListings + 1 }), 'notifyChanged'] },
              { actions: assign({ failedListings: ({ context }) => context.failedListings + 1 }) },
            ],
          },
        },
        stale: {
          on: {
            LISTING_SUCCEEDED: { target: 'current', actions: [assign({ failedListings: 0 }), 'notifyChanged'] },
            LISTING_FAILED: { actions: assign({ failedListings: ({ context }) => context.failedListings + 1 }) },
          },
        },
      },
    },
    quota: {
      initial: 'available',
      states: {
        available: { on: { QUOTA_EXCEEDED: 'exceeded' } },
        exceeded: {
          // A second quota error does not extend the wait: the TTL runs from the first.
          after: { quotaErrorTTL: { target: 'available', actions: 'notifyChanged' } },
        },
      },
    },
    throttle: {
      type: 'parallel',
      // One region per kind of call: a rate-limit error closes it for the delay the error gave,
      // and a later one restarts the wait.
      states: {
        create: throttleRegion('create'),
        list: throttleRegion('list'),
        destroy: throttleRegion('destroy'),
        setTags: throttleRegion('setTags'),
      },
    },
  },
});

export type PoolMachine = typeof poolMachine;
