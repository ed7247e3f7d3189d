// The pool's own state: the sync loop, whether its picture of the cloud can be trusted, the quota
// estimate and one throttle per kind of cloud call. Pure: listing is an actor and notifying
// subscribers an action, both supplied by src/pool with .provide(); times arrive in events.
import { assign, fromPromise, raise, setup, stateIn } from 'xstate';

/** Consecutive failed listings after which the pool's picture of the cloud is stale. */
export const staleAfterFailedListings = 3;

export type ThrottledOperation = 'create' | 'list' | 'destroy' | 'setTags';
export const throttledOperations: readonly ThrottledOperation[] = ['create', 'list', 'destroy', 'setTags'];

/** Longest quiet period the quota estimate waits before it allows one more instance. */
export const maxQuotaQuietPeriodMs = 3_600_000;

/**
 * How long the estimate holds after a quota error before it allows one more instance: the TTL,
 * doubled for each quota error in a row that showed no more room, up to an hour (never below the TTL).
 */
export function quotaQuietPeriodMs(quotaErrorTTL: number, doublings: number): number {
  return Math.max(quotaErrorTTL, Math.min(quotaErrorTTL * 2 ** doublings, maxQuotaQuietPeriodMs));
}

/** What the pool believes of the cloud's quota, from its quota errors and listings. */
export interface QuotaEstimate {
  /** Instances the quota is thought to allow: creates stop at this many. */
  instances: number;
  /** Instances known to fit: those that existed at the last quota error, or more seen in a listing since. */
  known: number;
  /** Quota errors in a row that showed no more room than the one before, each doubling the quiet period. */
  doublings: number;
  /** Clock ms of the last quota error. */
  lastErrorAt: number;
  /** Clock ms the current quiet period began: the last quota error, or a listing that raised the estimate. */
  quietSince: number;
}

/** Boot failures across the pool are counted over this long for freezePoolAfterBootFailures. */
export const freezeWindowMs = 3_600_000;

export interface PoolInput {
  /** Boot failures within freezeWindowMs after which every create stops until an operator resumes the pool; null: never. */
  freezeAfterBootFailures?: number | null;
}

export interface PoolContext {
  failedListings: number;
  freezeAfterBootFailures: number | null;
  /** Clock ms of the boot failures within the last freezeWindowMs (only kept when freezing is on). */
  recentBootFailures: number[];
  /** Why creates froze, while they are frozen. */
  frozenBecause: string | null;
  /** How long each throttled operation waits, set by the rate-limit error that throttled it. */
  throttleDelayMs: Record<ThrottledOperation, number>;
  /** Null until the first quota error. */
  quota: QuotaEstimate | null;
}

/** What a successful listing found: instances of this pool's known types, and when it ended. */
export interface ListingResult {
  instances: number;
  at: number;
}

export type PoolEvent =
  | ({ type: 'LISTING_SUCCEEDED' } & ListingResult)
  | { type: 'LISTING_FAILED'; reason: string }
  /** A create failed on the quota while `instances` existed (creates still in flight not counted). */
  | { type: 'QUOTA_EXCEEDED'; instances: number; at: number }
  | { type: 'RATE_LIMITED'; operation: ThrottledOperation; delayMs: number }
  /** An instance failed its boot (or its create failed with no capacity, quota or rate class). */
  | { type: 'BOOT_FAILED'; at: number }
  /** The operator lifts a freeze. */
  | { type: 'RESUME_CREATES' };

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
    input: {} as PoolInput,
  },
  actors: {
    // Lists the cloud and reconciles the workers with the answer; rejects if the listing failed.
    syncInstances: fromPromise<ListingResult>(async () => {
      throw new Error('pool machine: syncInstances must be supplied with .provide()');
    }),
  },
  actions: {
    notifyChanged: () => {},
    rememberThrottleDelay: assign(({ context, event }) => {
      if (event.type !== 'RATE_LIMITED') return {};
      return { throttleDelayMs: { ...context.throttleDelayMs, [event.operation]: event.delayMs } };
    }),
    // The quota holds what exists now; a quota error with more room than the last one starts the
    // quiet periods over.
    estimateFromQuotaError: assign(({ context, event }) => {
      if (event.type !== 'QUOTA_EXCEEDED') return {};
      const previous = context.quota;
      const doublings = previous === null || event.instances > previous.known ? 0 : previous.doublings;
      return { quota: { instances: event.instances, known: event.instances, doublings, lastErrorAt: event.at, quietSince: event.at } };
    }),
    recordBootFailure: assign(({ context, event }) => {
      if (event.type !== 'BOOT_FAILED' || context.freezeAfterBootFailures === null) return {};
      return { recentBootFailures: [...context.recentBootFailures.filter((at) => at > event.at - freezeWindowMs), event.at] };
    }),
    freeze: assign(({ context }) => ({
      frozenBecause: `${context.recentBootFailures.length} boot failures within an hour (freezePoolAfterBootFailures ${context.freezeAfterBootFailures ?? 0})`,
    })),
    thaw: assign({ frozenBecause: null, recentBootFailures: [] }),
    doubleQuietPeriod: assign(({ context }) => (context.quota ? { quota: { ...context.quota, doublings: context.quota.doublings + 1 } } : {})),
    allowOneMore: assign(({ context }) => (context.quota ? { quota: { ...context.quota, instances: context.quota.known + 1 } } : {})),
    // Someone raised the quota (or the allowed one more fitted): what was listed fits, and the quiet
    // periods start over from the TTL.
    raiseEstimateToListing: assign(({ context, event }) => {
      if (event.type !== 'LISTING_SUCCEEDED' || !context.quota) return {};
      const { quota } = context;
      return { quota: { ...quota, instances: Math.max(quota.instances, event.instances), known: event.instances, doublings: 0, quietSince: event.at } };
    }),
  },
  guards: {
    // The failure that arrived is the one that reaches the limit.
    freezesNow: ({ context, event }) =>
      event.type === 'BOOT_FAILED' &&
      context.freezeAfterBootFailures !== null &&
      context.recentBootFailures.filter((at) => at > event.at - freezeWindowMs).length + 1 >= context.freezeAfterBootFailures,
    listingThrottled: stateIn('#pool.throttle.list.throttled'),
    limits: ({ event }, params: { operation: ThrottledOperation }) =>
      event.type === 'RATE_LIMITED' && event.operation === params.operation,
    staleNow: ({ context }) => context.failedListings + 1 >= staleAfterFailedListings,
    listedMoreThanKnown: ({ context, event }) => event.type === 'LISTING_SUCCEEDED' && context.quota !== null && event.instances > context.quota.known,
    noMoreRoomThanKnown: ({ context, event }) => event.type === 'QUOTA_EXCEEDED' && context.quota !== null && event.instances <= context.quota.known,
  },
  delays: {
    syncInterval: 60_000,
    // Supplied by the pool from quotaErrorTTL; this default is the config's.
    quotaQuietPeriod: ({ context }) => quotaQuietPeriodMs(60_000, context.quota?.doublings ?? 0),
    createThrottle: ({ context }) => context.throttleDelayMs.create,
    listThrottle: ({ context }) => context.throttleDelayMs.list,
    destroyThrottle: ({ context }) => context.throttleDelayMs.destroy,
    setTagsThrottle: ({ context }) => context.throttleDelayMs.setTags,
  },
}).createMachine({
  id: 'pool',
  type: 'parallel',
  context: ({ input }) => ({
    failedListings: 0,
    freezeAfterBootFailures: input?.freezeAfterBootFailures ?? null,
    recentBootFailures: [],
    frozenBecause: null,
    throttleDelayMs: { create: 0, list: 0, destroy: 0, setTags: 0 },
    quota: null,
  }),
  states: {
    sync: {
      initial: 'listing',
      states: {
        listing: {
          invoke: {
            src: 'syncInstances',
            onDone: { target: 'waiting', actions: raise(({ event }) => ({ type: 'LISTING_SUCCEEDED' as const, ...event.output })) },
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
    // The quota estimate (Arvados' atQuotaUntilFewerInstances): creates stop at the instances that
    // existed at the last quota error; after a quiet period without one, one more is allowed.
    quota: {
      initial: 'unestimated',
      states: {
        // No quota error yet: only maxInstances bounds creates.
        unestimated: { on: { QUOTA_EXCEEDED: { target: 'estimated', actions: ['estimateFromQuotaError', 'notifyChanged'] } } },
        estimated: {
          initial: 'holding',
          on: {
            QUOTA_EXCEEDED: { target: '.holding', reenter: true, actions: ['estimateFromQuotaError', 'notifyChanged'] },
            LISTING_SUCCEEDED: { guard: 'listedMoreThanKnown', target: '.holding', reenter: true, actions: ['raiseEstimateToListing', 'notifyChanged'] },
          },
          states: {
            holding: { after: { quotaQuietPeriod: { target: 'probing', actions: ['allowOneMore', 'notifyChanged'] } } },
            // One more than known is allowed; a quota error here means the quota did not grow.
            probing: {
              on: {
                QUOTA_EXCEEDED: { guard: 'noMoreRoomThanKnown', target: 'holding', actions: ['estimateFromQuotaError', 'doubleQuietPeriod', 'notifyChanged'] },
              },
            },
          },
        },
      },
    },
    throttle: {
      type: 'parallel',
      // One region per kind of call: a rate-limit error closes it for the delay the error gave,
      // and a later one restarts the wait.
      states: Object.fromEntries(throttledOperations.map((operation) => [operation, throttleRegion(operation)])) as Record<
        ThrottledOperation,
        ReturnType<typeof throttleRegion>
      >,
    },
    // The operator's brake on a pool that keeps making instances that never boot: frozen, no
    // create goes ahead until POST /pool/resume.
    creates: {
      initial: 'open',
      states: {
        open: {
          on: {
            BOOT_FAILED: [
              { guard: 'freezesNow', target: 'frozen', actions: ['recordBootFailure', 'freeze', 'notifyChanged'] },
              { actions: 'recordBootFailure' },
            ],
          },
        },
        frozen: { on: { RESUME_CREATES: { target: 'open', actions: ['thaw', 'notifyChanged'] } } },
      },
    },
  },
});

export type PoolMachine = typeof poolMachine;
