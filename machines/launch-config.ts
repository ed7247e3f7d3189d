// One launch config of an instance type: whether the operator lets it create (active, paused,
// archived), whether the bad-image breaker does (healthy, or broken: cooling, then one trial
// instance at a time), and its recent record, from which creates weigh it against the type's
// other configs. Pure: times arrive in events, the breaker's wait is a named delay, and telling the
// pool a trial may start is an action the pool supplies.
import { and, assign, setup } from 'xstate';
import type { LaunchConfigAdminState } from '../src/config/launch-configs.js';

/** The breaker's first wait after it opens, and the longest it doubles to. */
export const firstBreakerDelayMs = 60_000;
export const maxBreakerDelayMs = 30 * 60_000;
/** Buckets the health window is counted in: outcomes older than the window fall out a bucket at a time. */
export const healthBuckets = 60;

export interface LaunchConfigInput {
  id: string;
  initialState: LaunchConfigAdminState;
  /** Boot failures in a row (create errors of no other class count too) that break the config. */
  bootFailuresToBreak: number;
  /** How far back boots and failures count towards the config's weight. */
  healthWindowMs: number;
  /** A config that failed recently is still tried this often while work for its type waits. */
  retryIntervalMs: number;
}

/** Boots and failures in one slice (healthWindowMs / healthBuckets) of the window. */
export interface OutcomeBucket {
  slice: number;
  successes: number;
  failures: number;
}

export interface LaunchConfigContext {
  id: string;
  initialState: LaunchConfigAdminState;
  bootFailuresToBreak: number;
  healthWindowMs: number;
  retryIntervalMs: number;
  buckets: OutcomeBucket[];
  consecutiveBootFailures: number;
  /** How long the breaker cools before the next trial (doubles with each failed trial). */
  breakerDelayMs: number;
  /** Clock ms at which the current cooling ends. */
  coolingUntil: number;
  lastError: { at: number; message: string } | null;
  /** Clock ms of the last create from this config; null: never tried since start. */
  lastTriedAt: number | null;
  /** While broken: the worker of the one trial instance, once its create has started. */
  trialWorkerId: string | null;
}

export type LaunchConfigEvent =
  | { type: 'CREATE_STARTED'; at: number; workerId: string }
  /**
   * A create call failed. `breaksImage`: an error of no capacity, quota or rate-limit class (a bad
   * image id or subnet fails every create), which counts towards the breaker like a failed boot.
   */
  | { type: 'CREATE_FAILED'; at: number; workerId: string; message: string; breaksImage: boolean }
  | { type: 'BOOTED'; at: number; workerId: string }
  | { type: 'BOOT_FAILED'; at: number; workerId: string; message: string }
  /** An instance vanished from the cloud soon after it booted: a failure, though not of its boot. */
  | { type: 'VANISHED_EARLY'; at: number; workerId: string; message: string }
  /** An instance went away with no verdict on its boot (shut down as surplus or drained while booting). */
  | { type: 'INSTANCE_ENDED'; workerId: string }
  | { type: 'PAUSE' }
  | { type: 'RESUME' }
  | { type: 'ARCHIVE' };

type Tag = LaunchConfigAdminState | 'healthy' | 'broken' | 'cooling' | 'trialReady' | 'trialRunning' | 'retryDue';

type OutcomeEvent = Extract<LaunchConfigEvent, { at: number }>;

function sliceOf(context: LaunchConfigContext, at: number): number {
  return Math.floor(at / Math.max(1, context.healthWindowMs / healthBuckets));
}

/** The buckets with this outcome added and those that fell out of the window dropped. */
function withOutcome(context: LaunchConfigContext, at: number, ok: boolean): OutcomeBucket[] {
  const slice = sliceOf(context, at);
  const kept = context.buckets.filter((bucket) => bucket.slice > slice - healthBuckets);
  const last = kept.at(-1);
  if (last?.slice === slice) {
    return [...kept.slice(0, -1), { slice, successes: last.successes + (ok ? 1 : 0), failures: last.failures + (ok ? 0 : 1) }];
  }
  return [...kept, { slice, successes: ok ? 1 : 0, failures: ok ? 0 : 1 }];
}

/** Boots and failures within the health window that ends at `now`. */
export function recentOutcomes(context: LaunchConfigContext, now: number): { successes: number; failures: number } {
  const slice = sliceOf(context, now);
  let successes = 0;
  let failures = 0;
  for (const bucket of context.buckets) {
    if (bucket.slice <= slice - healthBuckets) continue;
    successes += bucket.successes;
    failures += bucket.failures;
  }
  return { successes, failures };
}

/**
 * The weight creates give the config now: its configured weight × its boot success rate over the
 * window (the full weight with nothing in the window). A config that only failed weighs 0 and is
 * tried only by the retry rule (src/pool/launch-configs.ts).
 */
export function effectiveWeight(context: LaunchConfigContext, weight: number, now: number): number {
  const { successes, failures } = recentOutcomes(context, now);
  return successes + failures === 0 ? weight : (weight * successes) / (successes + failures);
}

const failure = (message: string, at: number) => ({ lastError: { at, message } });

export const launchConfigMachine = setup({
  types: {
    context: {} as LaunchConfigContext,
    events: {} as LaunchConfigEvent,
    input: {} as LaunchConfigInput,
    tags: {} as Tag,
  },
  actions: {
    // Supplied by the pool: the config may create again (a trial is due), so waiting work may move.
    notifyChanged: () => {},
    noteTried: assign(({ event }) => (event.type === 'CREATE_STARTED' ? { lastTriedAt: event.at } : {})),
    recordSuccess: assign(({ context, event }) => ({
      buckets: withOutcome(context, (event as OutcomeEvent).at, true),
      consecutiveBootFailures: 0,
    })),
    recordFailure: assign(({ context, event }) => {
      const { at } = event as OutcomeEvent;
      const message = 'message' in event ? event.message : 'failed';
      return { buckets: withOutcome(context, at, false), ...failure(message, at) };
    }),
    countBootFailure: assign(({ context }) => ({ consecutiveBootFailures: context.consecutiveBootFailures + 1 })),
    startCooling: assign(({ context, event }) => ({ coolingUntil: (event as OutcomeEvent).at + context.breakerDelayMs, trialWorkerId: null })),
    doubleBreakerDelay: assign(({ context }) => ({ breakerDelayMs: Math.min(context.breakerDelayMs * 2, maxBreakerDelayMs) })),
    resetBreaker: assign({ breakerDelayMs: firstBreakerDelayMs, trialWorkerId: null }),
    forgetTrial: assign({ trialWorkerId: null }),
    rememberTrial: assign(({ event }) => (event.type === 'CREATE_STARTED' ? { trialWorkerId: event.workerId } : {})),
  },
  guards: {
    initiallyPaused: ({ context }) => context.initialState === 'paused',
    initiallyArchived: ({ context }) => context.initialState === 'archived',
    // The failure about to be counted is the one that breaks the config.
    breaksNow: ({ context }) => context.consecutiveBootFailures + 1 >= context.bootFailuresToBreak,
    breaksImage: ({ event }) => event.type === 'CREATE_FAILED' && event.breaksImage,
    isTrial: ({ context, event }) => 'workerId' in event && event.workerId === context.trialWorkerId,
  },
  delays: {
    breakerDelay: ({ context }) => context.breakerDelayMs,
    retryInterval: ({ context }) => context.retryIntervalMs,
  },
}).createMachine({
  id: 'launchConfig',
  type: 'parallel',
  context: ({ input }) => ({
    id: input.id,
    initialState: input.initialState,
    bootFailuresToBreak: input.bootFailuresToBreak,
    healthWindowMs: input.healthWindowMs,
    retryIntervalMs: input.retryIntervalMs,
    buckets: [],
    consecutiveBootFailures: 0,
    breakerDelayMs: firstBreakerDelayMs,
    coolingUntil: 0,
    lastError: null,
    lastTriedAt: null,
    trialWorkerId: null,
  }),
  states: {
    // What the operator allows. Archived is for good: a config changed in the file gets a new id.
    admin: {
      initial: 'restoring',
      states: {
        restoring: {
          always: [
            { guard: 'initiallyPaused', target: 'paused' },
            { guard: 'initiallyArchived', target: 'archived' },
            { target: 'active' },
          ],
        },
        active: { tags: ['active'], on: { PAUSE: 'paused', ARCHIVE: 'archived' } },
        paused: { tags: ['paused'], on: { RESUME: { target: 'active', actions: 'notifyChanged' }, ARCHIVE: 'archived' } },
        archived: { tags: ['archived'] },
      },
    },
    // Whether retryInterval has passed since the config's last create: a config whose weight fell
    // with its failures is tried again then, whatever its weight, so it is seen to recover.
    retry: {
      initial: 'due',
      states: {
        due: { tags: ['retryDue'], on: { CREATE_STARTED: 'waiting' } },
        waiting: {
          on: { CREATE_STARTED: { target: 'waiting', reenter: true } },
          after: { retryInterval: { target: 'due', actions: 'notifyChanged' } },
        },
      },
    },
    // The bad-image breaker, and the record behind the config's weight.
    health: {
      initial: 'healthy',
      on: {
        VANISHED_EARLY: { actions: 'recordFailure' },
      },
      states: {
        healthy: {
          tags: ['healthy'],
          on: {
            CREATE_STARTED: { actions: 'noteTried' },
            BOOTED: { actions: 'recordSuccess' },
            BOOT_FAILED: [
              { guard: 'breaksNow', target: 'broken', actions: ['recordFailure', 'countBootFailure', 'startCooling'] },
              { actions: ['recordFailure', 'countBootFailure'] },
            ],
            CREATE_FAILED: [
              { guard: and(['breaksImage', 'breaksNow']), target: 'broken', actions: ['recordFailure', 'countBootFailure', 'startCooling'] },
              { guard: 'breaksImage', actions: ['recordFailure', 'countBootFailure'] },
              { actions: 'recordFailure' },
            ],
          },
        },
        broken: {
          tags: ['broken'],
          initial: 'cooling',
          on: {
            // One good boot, the trial's or an earlier instance's, restores the config.
            BOOTED: { target: 'healthy', actions: ['recordSuccess', 'resetBreaker', 'notifyChanged'] },
            BOOT_FAILED: { actions: ['recordFailure', 'countBootFailure'] },
            CREATE_FAILED: { actions: 'recordFailure' },
            CREATE_STARTED: { actions: 'noteTried' },
          },
          states: {
            cooling: {
              tags: ['cooling'],
              after: { breakerDelay: { target: 'trialReady', actions: 'notifyChanged' } },
            },
            // One create may go ahead: the trial.
            trialReady: {
              tags: ['trialReady'],
              on: { CREATE_STARTED: { target: 'trialRunning', actions: ['noteTried', 'rememberTrial'] } },
            },
            trialRunning: {
              tags: ['trialRunning'],
              on: {
                BOOT_FAILED: [
                  { guard: 'isTrial', target: 'cooling', actions: ['recordFailure', 'countBootFailure', 'doubleBreakerDelay', 'startCooling'] },
                  { actions: ['recordFailure', 'countBootFailure'] },
                ],
                CREATE_FAILED: [
                  { guard: and(['isTrial', 'breaksImage']), target: 'cooling', actions: ['recordFailure', 'countBootFailure', 'doubleBreakerDelay', 'startCooling'] },
                  // Refused for capacity, quota or rate: the image was not tried, so the trial is still to come.
                  { guard: 'isTrial', target: 'trialReady', actions: ['recordFailure', 'forgetTrial'] },
                  { actions: 'recordFailure' },
                ],
                INSTANCE_ENDED: { guard: 'isTrial', target: 'trialReady', actions: ['forgetTrial', 'notifyChanged'] },
              },
            },
          },
        },
      },
    },
  },
});

export type LaunchConfigMachine = typeof launchConfigMachine;
