// The life of one cloud instance as Drover sees it. Pure: creating, probing and destroying are
// actors, saving the idle behaviour is an action, and whether containers are on the instance is a
// guard reading the pool's allocation ledger, all supplied by the pool with .provide(); timeouts
// are named delays the pool sets from its config. Containers themselves are their own actors
// (machines/container.ts): this machine only learns that the ledger changed.
import { assign, fromPromise, raise, setup, stateIn, and, not } from 'xstate';
import type { CloudInstance } from '../src/cloud/driver.js';
import { formatDuration } from '../src/config/duration.js';

export type IdleBehavior = 'run' | 'hold' | 'drain';
export const idleBehaviors: readonly IdleBehavior[] = ['run', 'hold', 'drain'];

export type Lifecycle = 'creating' | 'unknown' | 'booting' | 'idle' | 'running' | 'shutdown' | 'failed';
export const lifecycles: readonly Lifecycle[] = ['creating', 'unknown', 'booting', 'idle', 'running', 'shutdown', 'failed'];

/** Defaults of `pool.maxInstanceLifetime` and `pool.timeoutTERM`, in ms. */
export const defaultMaxInstanceLifetime = 96 * 3_600_000;
export const defaultTimeoutTERM = 2 * 60_000;

export interface InstanceInput {
  workerId: string;
  instanceType: string;
  idleBehavior: IdleBehavior;
  /** Present when the pool is creating this instance; absent for an instance found in a listing. */
  createToken?: string;
  /** Container starts in a row that may fail here for the instance's reasons before it is drained (default 3). */
  maxFailedStarts?: number;
  /**
   * Ms after which the instance is drained, counted from when this machine starts (the create
   * request, or the first listing this daemon saw it in); absent or null: no limit.
   */
  maxInstanceLifetime?: number | null;
  instance?: CloudInstance;
}

export interface InstanceContext {
  workerId: string;
  instanceType: string;
  createToken: string | null;
  instance: CloudInstance | null;
  /** The idle behaviour the worker started with (from its tag); the region holds the live one. */
  initialIdleBehavior: IdleBehavior;
  booted: boolean;
  /** A probe has finished (either way) since the worker appeared: only then may timeoutBooting judge an instance found in a listing. */
  probed: boolean;
  /** Why the lifecycle last changed, for logs and the per-instance history. */
  reason: string;
  /** A shutdown asked for while the create call was in flight, carried out once it returns. */
  pendingShutdown: string | null;
  lastError: string | null;
  /** Container starts in a row that failed for the instance's reasons (refused by its runner, or unanswered). */
  failedStarts: number;
  maxFailedStarts: number;
  /** It was shut down for not booting within timeoutBooting: a failed boot, which its launch config counts. */
  bootTimedOut: boolean;
  maxInstanceLifetime: number | null;
}

/** The runner's list that follows a passed boot probe goes to the ledger before the probe settles. */
export interface ProbeResult {
  booted: boolean;
}

export interface CreateInstanceInput {
  workerId: string;
  instanceType: string;
  createToken: string;
}
export interface InstanceRef {
  workerId: string;
  instance: CloudInstance;
}
export interface ProbeInput extends InstanceRef {
  booted: boolean;
}

export type InstanceEvent =
  | { type: 'INSTANCE_LISTED'; instance: CloudInstance }
  | { type: 'PROBE_DUE' }
  | { type: 'BOOT_PROBE_FAILED' }
  | { type: 'PROBE_SUCCEEDED' }
  | { type: 'PROBE_FAILED'; reason: string }
  | { type: 'IDLE_BEHAVIOR_SET'; idleBehavior: IdleBehavior }
  | { type: 'SHUTDOWN_REQUESTED'; reason: string }
  /** A container is being placed here; refused (see `can()`) unless the instance takes work. */
  | { type: 'CONTAINER_ASSIGNED'; containerUuid: string }
  /** The ledger's containers on this instance changed: re-read the hasContainers guard. */
  | { type: 'ALLOCATIONS_CHANGED' }
  /** How a container start here went; `instanceFault` when it failed for the instance's reasons, not the container's. */
  | { type: 'START_SETTLED'; outcome: 'started' | 'instanceFault' | 'containerFault' }
  /**
   * The instance is older than maxInstanceLifetime. The pool checks ages at each listing rather
   * than each machine keeping a timer: 10,000 timers of 96 h would slow every other timer down.
   */
  | { type: 'LIFETIME_REACHED' };

function notProvided(name: string): never {
  throw new Error(`instance machine: ${name} must be supplied with .provide()`);
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

const lifecycle = '#instance.lifecycle';

function lifetimeReason(context: InstanceContext): string {
  return `reached maxInstanceLifetime ${formatDuration(context.maxInstanceLifetime ?? 0)}`;
}

// Past its lifetime an instance drains like one set to drain, but says why. The same transition
// for each lifecycle state that a drain ends (booting, idle).
const drainedByLifetime = {
  guard: 'lifetimeDraining',
  target: `${lifecycle}.shutdown`,
  actions: { type: 'because', params: ({ context }: { context: InstanceContext }) => ({ reason: lifetimeReason(context) }) },
} as const;

export const instanceMachine = setup({
  types: {
    context: {} as InstanceContext,
    events: {} as InstanceEvent,
    input: {} as InstanceInput,
    // The lifecycle state and the idle behaviour, for the pool to read without parsing state values;
    // `lifetime:draining` marks an instance drained by its lifetime whatever its behaviour says.
    tags: {} as Lifecycle | `behavior:${IdleBehavior}` | 'lifetime:draining',
  },
  actors: {
    createInstance: fromPromise<CloudInstance, CreateInstanceInput>(async () => notProvided('createInstance')),
    probeInstance: fromPromise<ProbeResult, ProbeInput>(async () => notProvided('probeInstance')),
    destroyInstance: fromPromise<void, InstanceRef>(async () => notProvided('destroyInstance')),
  },
  actions: {
    // Persists the behaviour in the instance's tags so a restarted pool restores it.
    saveIdleBehavior: (_, _params: { idleBehavior: IdleBehavior }) => {},
    because: assign((_, params: { reason: string }) => ({ reason: params.reason })),
    markBootTimedOut: assign({ bootTimedOut: true }),
    rememberInstance: assign(({ event }) => {
      if (event.type !== 'INSTANCE_LISTED') return {};
      return { instance: event.instance };
    }),
  },
  guards: {
    createdByPool: ({ context }) => context.createToken !== null,
    restoredAs: ({ context }, params: { idleBehavior: IdleBehavior }) => context.initialIdleBehavior === params.idleBehavior,
    requested: ({ event }, params: { idleBehavior: IdleBehavior }) =>
      event.type === 'IDLE_BEHAVIOR_SET' && event.idleBehavior === params.idleBehavior,
    behaviorIsRun: stateIn('#instance.idleBehavior.run'),
    behaviorIsHold: stateIn('#instance.idleBehavior.hold'),
    behaviorIsDrain: stateIn('#instance.idleBehavior.drain'),
    probeOverdue: stateIn('#instance.health.unresponsive.overdue'),
    lifetimeLimited: ({ context }) => context.maxInstanceLifetime !== null,
    lifetimeDraining: stateIn('#instance.lifetime.over.draining'),
    // Only an instance set to run, and within its lifetime, is given containers.
    takesWork: and(['behaviorIsRun', not(stateIn('#instance.lifetime.over'))]),
    // Supplied by the pool: whether its ledger holds any container on this instance.
    containersRunning: () => false,
    probedOnce: ({ context }) => context.probed,
    startFailedHere: ({ event }) => event.type === 'START_SETTLED' && event.outcome === 'instanceFault',
    startWorked: ({ event }) => event.type === 'START_SETTLED' && event.outcome === 'started',
    lastFailedStartAllowed: ({ context }) => context.failedStarts + 1 >= context.maxFailedStarts,
    seenBooted: ({ context }) => context.booted,
    hasInstance: ({ context }) => context.instance !== null,
  },
  delays: {
    // Arvados' defaults; the pool provides its configured values.
    timeoutBooting: 10 * 60_000,
    timeoutIdle: 60_000,
    timeoutProbe: 10 * 60_000,
    timeoutShutdown: 10_000,
    // How long containers may still run on an instance drained at its lifetime before it is shut down anyway.
    timeoutTERM: defaultTimeoutTERM,
  },
}).createMachine({
  id: 'instance',
  type: 'parallel',
  context: ({ input }) => ({
    workerId: input.workerId,
    instanceType: input.instanceType,
    createToken: input.createToken ?? null,
    instance: input.instance ?? null,
    initialIdleBehavior: input.idleBehavior,
    booted: false,
    probed: false,
    reason: input.createToken ? 'create requested' : 'found in cloud listing',
    pendingShutdown: null,
    failedStarts: 0,
    maxFailedStarts: input.maxFailedStarts ?? 3,
    bootTimedOut: false,
    maxInstanceLifetime: input.maxInstanceLifetime ?? null,
    lastError: null,
  }),
  states: {
    lifecycle: {
      initial: 'arriving',
      on: {
        INSTANCE_LISTED: { actions: 'rememberInstance' },
        SHUTDOWN_REQUESTED: {
          target: '.shutdown',
          actions: { type: 'because', params: ({ event }) => ({ reason: event.reason }) },
        },
      },
      states: {
        arriving: {
          always: [{ guard: 'createdByPool', target: 'creating' }, { target: 'unknown' }],
        },
        creating: {
          tags: ['creating'],
          // Nothing to destroy until the create call returns an id: remember it until then.
          on: { SHUTDOWN_REQUESTED: { actions: assign({ pendingShutdown: ({ event }) => event.reason }) } },
          invoke: {
            src: 'createInstance',
            input: ({ context }) => ({
              workerId: context.workerId,
              instanceType: context.instanceType,
              createToken: context.createToken ?? '',
            }),
            onDone: [
              {
                guard: ({ context }) => context.pendingShutdown !== null,
                target: 'shutdown',
                actions: [
                  assign({ instance: ({ event }) => event.output }),
                  { type: 'because', params: ({ context }) => ({ reason: `${context.pendingShutdown ?? ''} (asked while creating)` }) },
                ],
              },
              {
                target: 'booting',
                actions: [assign({ instance: ({ event }) => event.output }), { type: 'because', params: { reason: 'create returned' } }],
              },
            ],
            onError: {
              target: 'failed',
              actions: assign({
                lastError: ({ event }) => errorMessage(event.error),
                reason: ({ event }) => `create failed: ${errorMessage(event.error)}`,
              }),
            },
          },
        },
        unknown: {
          tags: ['unknown'],
          initial: 'waiting',
          states: {
            waiting: { after: { timeoutBooting: 'overdue' } },
            overdue: {
              // After a restart with many instances, probes take a while to reach them all: an
              // instance nobody has asked yet is not judged.
              always: {
                // A probe that just found it booted raises PROBE_SUCCEEDED, but eventless transitions
                // run first: only a probe that did not find it booted may condemn it.
                guard: and(['probedOnce', not('seenBooted'), not('behaviorIsHold'), not('containersRunning')]),
                target: `${lifecycle}.shutdown`,
                actions: [{ type: 'because', params: { reason: 'not seen booted within timeoutBooting' } }, 'markBootTimedOut'],
              },
            },
          },
          on: {
            PROBE_SUCCEEDED: [
              { guard: 'containersRunning', target: 'running', actions: { type: 'because', params: { reason: 'probe found containers running' } } },
              { target: 'idle', actions: { type: 'because', params: { reason: 'probe found it booted and idle' } } },
            ],
          },
        },
        booting: {
          tags: ['booting'],
          initial: 'waiting',
          always: [
            {
              guard: 'behaviorIsDrain',
              target: 'shutdown',
              actions: { type: 'because', params: { reason: 'draining' } },
            },
            drainedByLifetime,
          ],
          states: {
            waiting: { after: { timeoutBooting: 'overdue' } },
            overdue: {
              always: {
                guard: not('behaviorIsHold'),
                target: `${lifecycle}.shutdown`,
                actions: [{ type: 'because', params: { reason: 'boot probe did not pass within timeoutBooting' } }, 'markBootTimedOut'],
              },
            },
          },
          on: {
            PROBE_SUCCEEDED: [
              { guard: 'containersRunning', target: 'running', actions: { type: 'because', params: { reason: 'booted with containers running' } } },
              { target: 'idle', actions: { type: 'because', params: { reason: 'booted' } } },
            ],
          },
        },
        idle: {
          tags: ['idle'],
          initial: 'recent',
          always: [
            {
              guard: 'behaviorIsDrain',
              target: 'shutdown',
              actions: { type: 'because', params: { reason: 'drained' } },
            },
            drainedByLifetime,
            {
              guard: and(['probeOverdue', not('behaviorIsHold')]),
              target: 'shutdown',
              actions: { type: 'because', params: { reason: 'probes failing for longer than timeoutProbe' } },
            },
          ],
          states: {
            recent: { after: { timeoutIdle: 'expired' } },
            expired: {
              always: {
                guard: 'behaviorIsRun',
                target: `${lifecycle}.shutdown`,
                actions: { type: 'because', params: { reason: 'idle for longer than timeoutIdle' } },
              },
            },
          },
          on: {
            // Resumed (hold → run): a whole timeoutIdle from now, not what was left of the one that
            // ran out while it was held. Guards see the behaviour before the event, so setting run
            // on an instance already at run does not restart the count. The lifecycle stays idle,
            // so the reason stays too.
            IDLE_BEHAVIOR_SET: {
              guard: and([{ type: 'requested', params: { idleBehavior: 'run' as const } }, not('behaviorIsRun')]),
              target: '.recent',
              reenter: true,
            },
            PROBE_SUCCEEDED: {
              guard: 'containersRunning',
              target: 'running',
              actions: { type: 'because', params: { reason: 'probe found containers running' } },
            },
            ALLOCATIONS_CHANGED: {
              guard: 'containersRunning',
              target: 'running',
              actions: { type: 'because', params: { reason: 'containers placed' } },
            },
            CONTAINER_ASSIGNED: {
              guard: 'takesWork',
              target: 'running',
              actions: { type: 'because', params: ({ event }) => ({ reason: `container ${event.containerUuid} assigned` }) },
            },
          },
        },
        running: {
          tags: ['running'],
          always: {
            guard: and(['probeOverdue', not('behaviorIsHold')]),
            target: 'shutdown',
            actions: { type: 'because', params: { reason: 'probes failing for longer than timeoutProbe' } },
          },
          on: {
            // Packing: more containers may join while the instance takes work.
            // An action so that `can()` reports the transition (XState counts only those that do something).
            CONTAINER_ASSIGNED: {
              guard: 'takesWork',
              actions: { type: 'because', params: ({ event }) => ({ reason: `container ${event.containerUuid} joined` }) },
            },
            ALLOCATIONS_CHANGED: {
              guard: not('containersRunning'),
              target: 'idle',
              actions: { type: 'because', params: { reason: 'containers finished' } },
            },
            PROBE_SUCCEEDED: {
              guard: not('containersRunning'),
              target: 'idle',
              actions: { type: 'because', params: { reason: 'containers finished' } },
            },
          },
        },
        shutdown: {
          tags: ['shutdown'],
          initial: 'destroying',
          on: { SHUTDOWN_REQUESTED: {} },
          states: {
            destroying: {
              invoke: {
                src: 'destroyInstance',
                input: ({ context }) => ({ workerId: context.workerId, instance: context.instance as CloudInstance }),
                onDone: 'awaitingRemoval',
                onError: {
                  target: 'awaitingRemoval',
                  actions: assign({ lastError: ({ event }) => errorMessage(event.error) }),
                },
              },
            },
            awaitingRemoval: { after: { timeoutShutdown: 'overdue' } },
            overdue: {
              on: {
                INSTANCE_LISTED: {
                  target: 'destroying',
                  actions: ['rememberInstance', { type: 'because', params: { reason: 'still listed after timeoutShutdown; destroying again' } }],
                },
              },
            },
          },
        },
        failed: {
          tags: ['failed'],
          on: { SHUTDOWN_REQUESTED: {} },
        },
      },
    },
    idleBehavior: {
      initial: 'restoring',
      states: {
        restoring: {
          always: [
            { guard: { type: 'restoredAs', params: { idleBehavior: 'hold' } }, target: 'hold' },
            { guard: { type: 'restoredAs', params: { idleBehavior: 'drain' } }, target: 'drain' },
            { target: 'run' },
          ],
        },
        run: { tags: ['behavior:run'] },
        hold: { tags: ['behavior:hold'] },
        drain: { tags: ['behavior:drain'] },
      },
      on: {
        IDLE_BEHAVIOR_SET: idleBehaviors.map((idleBehavior) => ({
          guard: { type: 'requested' as const, params: { idleBehavior } },
          target: `.${idleBehavior}`,
          actions: { type: 'saveIdleBehavior' as const, params: { idleBehavior } },
        })),
        // An instance whose runner keeps failing starts is taken out of service, so it cannot fail
        // (or hold up) a queue: drained, so it finishes what runs and shuts down.
        START_SETTLED: [
          { guard: 'startWorked', actions: assign({ failedStarts: 0 }) },
          {
            guard: and(['startFailedHere', 'lastFailedStartAllowed', 'behaviorIsRun']),
            target: '.drain',
            actions: [assign({ failedStarts: ({ context }) => context.failedStarts + 1 }), { type: 'saveIdleBehavior', params: { idleBehavior: 'drain' } }],
          },
          { guard: 'startFailedHere', actions: assign({ failedStarts: ({ context }) => context.failedStarts + 1 }) },
        ],
      },
    },
    probe: {
      initial: 'ready',
      states: {
        ready: {
          on: {
            PROBE_DUE: {
              guard: and([
                'hasInstance',
                not(stateIn('#instance.lifecycle.creating')),
                not(stateIn('#instance.lifecycle.shutdown')),
                not(stateIn('#instance.lifecycle.failed')),
              ]),
              target: 'probing',
            },
          },
        },
        probing: {
          invoke: {
            src: 'probeInstance',
            input: ({ context }) => ({
              workerId: context.workerId,
              instance: context.instance as CloudInstance,
              booted: context.booted,
            }),
            onDone: [
              {
                guard: ({ event }) => !event.output.booted,
                target: 'ready',
                actions: [assign({ probed: true }), raise({ type: 'BOOT_PROBE_FAILED' })],
              },
              {
                target: 'ready',
                actions: [assign({ booted: true, probed: true }), raise({ type: 'PROBE_SUCCEEDED' })],
              },
            ],
            onError: {
              target: 'ready',
              actions: [
                assign({ probed: true, lastError: ({ event }) => errorMessage(event.error) }),
                raise(({ event }) => ({ type: 'PROBE_FAILED' as const, reason: errorMessage(event.error) })),
              ],
            },
          },
        },
      },
    },
    health: {
      initial: 'responsive',
      states: {
        responsive: { on: { PROBE_FAILED: 'unresponsive' } },
        unresponsive: {
          initial: 'recent',
          states: {
            recent: { after: { timeoutProbe: 'overdue' } },
            overdue: {},
          },
          on: { PROBE_SUCCEEDED: 'responsive', BOOT_PROBE_FAILED: 'responsive' },
        },
      },
    },
    // Counted by the pool from when it first had the instance (LIFETIME_REACHED). At
    // maxInstanceLifetime the instance drains (booting and idle
    // instances shut down; running ones take no more work), and timeoutTERM into the drain it is shut
    // down even with containers on it: the pool requeues those as it does for any instance that goes.
    // A hold wins: a held instance past its lifetime is kept, and its drain starts afresh when the
    // hold is lifted.
    lifetime: {
      initial: 'starting',
      states: {
        starting: { always: [{ guard: 'lifetimeLimited', target: 'within' }, { target: 'unlimited' }] },
        unlimited: {},
        within: { on: { LIFETIME_REACHED: 'over' } },
        over: {
          // Chosen before draining is entered, so a held idle instance never sees itself draining.
          initial: 'reached',
          states: {
            reached: { always: [{ guard: 'behaviorIsHold', target: 'held' }, { target: 'draining' }] },
            draining: {
              tags: ['lifetime:draining'],
              always: { guard: 'behaviorIsHold', target: 'held' },
              after: { timeoutTERM: 'overdue' },
            },
            held: { always: { guard: not('behaviorIsHold'), target: 'draining' } },
            overdue: {
              tags: ['lifetime:draining'],
              entry: raise(({ context }) => ({
                type: 'SHUTDOWN_REQUESTED' as const,
                reason: `containers still running timeoutTERM after it ${lifetimeReason(context)}`,
              })),
            },
          },
        },
      },
    },
  },
});

export type InstanceMachine = typeof instanceMachine;
