// One attempt at running one container on one instance, from the queue lock to a result: a start
// this process makes, or a container adopted from a runner's list after a restart. Pure: runner
// calls are actors and durable queue writes are actions, all supplied by the pool with .provide();
// time enters only through event fields, actor outputs and the named delays.
import { assign, fromPromise, setup } from 'xstate';

export type AttemptInitial = 'locked' | 'uncertain' | 'running' | 'cancelling';

export interface ContainerAttemptInput {
  uuid: string;
  workerId: string;
  instanceId: string;
  /** 'locked' for a new start; the others when rebuilding after a restart or adopting what a runner list shows. */
  initial: AttemptInitial;
  /** Clock ms after which a runner list is news about this attempt (for initial uncertain/running/cancelling). Default 0. */
  since?: number;
}

export interface AttemptRef {
  uuid: string;
  workerId: string;
  instanceId: string;
}

export type StartOutcome =
  | { kind: 'started'; at: number } // runner accepted it (or said it already has it)
  | { kind: 'refused'; reason: string; fault: 'container' | 'instance' } // runner answered no; whose fault
  | { kind: 'uncertain'; sentAt: number; reason: string }; // answer lost / ambiguous: the runner's next list decides

export type RunnerStatus = { state: 'running' } | { state: 'exited'; exitCode: number } | { state: 'absent' };
export type KillSignal = 'TERM' | 'KILL';
export type KillContainerInput = AttemptRef & { signal: KillSignal };
export type KillOutcome = 'sent' | 'gone'; // 'gone': the runner has no such container

export type ContainerAttemptEvent =
  | { type: 'RUNNER_LISTED'; listedAt: number; status: RunnerStatus } // from a probe's runner list of this container's instance
  | { type: 'EXITED'; exitCode: number } // pushed at once by the runner watch session
  | { type: 'CANCEL' }
  | { type: 'INSTANCE_GONE'; reason: string };

export type AttemptResult = { outcome: 'done' | 'requeued' | 'failed'; reason: string }; // machine output when final

export interface ContainerAttemptContext extends AttemptRef {
  initial: AttemptInitial;
  /**
   * Clock ms after which a runner list is news. A list begun earlier may predate the start and
   * would read as "absent"; Infinity when a start call failed outright, so only the deadline decides.
   */
  since: number;
  /** Why the state last changed, for logs and the per-container history. */
  reason: string;
  exitCode: number | null;
  cancelRequested: boolean;
  /** A TERM reached the runner: only then may KILL follow, so the container gets its chance to clean up. */
  termDelivered: boolean;
  /** Signals the runner accepted. */
  killsSent: number;
  lastSignal: KillSignal | null;
  lastError: string | null;
  /** Set on entering a final state; the machine output reads it. */
  outcome: AttemptResult['outcome'] | null;
}

function notProvided(name: string): never {
  throw new Error(`container machine: ${name} must be supplied with .provide()`);
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

type Context = ContainerAttemptContext;
type Args<E = unknown> = { context: Context; event: E };

const ref = ({ context }: { context: Context }): AttemptRef => ({ uuid: context.uuid, workerId: context.workerId, instanceId: context.instanceId });
const where = ({ context }: Args) => ({ uuid: context.uuid, instanceId: context.instanceId });
const on = (context: Context) => `on instance ${context.instanceId}`;
const nextSignal = (context: Context): KillSignal => (context.termDelivered ? 'KILL' : 'TERM');

function exitCodeOf(event: ContainerAttemptEvent): number | null {
  if (event.type === 'EXITED') return event.exitCode;
  if (event.type === 'RUNNER_LISTED' && event.status.state === 'exited') return event.status.exitCode;
  return null;
}

// The clock time after which lists can tell what became of this start.
function sinceOf(outcome: StartOutcome): number {
  if (outcome.kind === 'started') return outcome.at;
  if (outcome.kind === 'uncertain') return outcome.sentAt;
  return Infinity;
}

function because<E>(reason: (context: Context, event: E) => string) {
  return { type: 'because' as const, params: ({ context, event }: Args<E>) => ({ reason: reason(context, event) }) };
}

const recordRunning = { type: 'recordRunning' as const, params: where };

// The reason is the one `because` has just set, so the queue and the history say the same thing.
function requeue<E>(lost: boolean, reason: (context: Context, event: E) => string) {
  return [
    because(reason),
    { type: 'recordRequeue' as const, params: ({ context }: Args) => ({ uuid: context.uuid, reason: context.reason, lost }) },
  ];
}

const answered =
  (kind: StartOutcome['kind'], fault?: 'container' | 'instance') =>
  ({ event }: Args<{ output: StartOutcome }>) =>
    event.output.kind === kind && (fault === undefined || (event.output.kind === 'refused' && event.output.fault === fault));
// A reason quoting what the runner said about the start.
const replied = (what: string) => (c: Context, e: { output: StartOutcome }) =>
  `${what} ${on(c)}: ${e.output.kind === 'started' ? `started at ${e.output.at}` : e.output.reason}`;
const recordFailed = { type: 'recordFailed' as const, params: ({ context }: Args) => ({ uuid: context.uuid, reason: context.reason }) };
const startAnswered = { type: 'startAnswered' as const, params: ({ event }: Args<{ output: StartOutcome }>) => ({ outcome: event.output }) };
const noteError = { type: 'noteError' as const, params: ({ event }: Args<{ error: unknown }>) => ({ error: event.error }) };
const startFailed = { ...noteError, type: 'startFailed' as const };

const gone = (context: Context, event: { reason: string }) => `instance ${context.instanceId} is gone: ${event.reason}`;

const ended = (c: Context, how: string) => `${c.cancelRequested ? 'cancelled; ' : ''}${how} ${on(c)} with exit code ${c.exitCode ?? '?'}`;

const recordExit = { type: 'recordExit' as const, params: ({ context }: Args) => ({ uuid: context.uuid, exitCode: context.exitCode ?? -1 }) };

// recordExit is durable before anything else happens to an exited container, logs included.
// Only exit events lead here, so noteExit has just set the code.
const exited = ['noteExit' as const, recordExit, because((c) => ended(c, 'exited'))];

const cancel = ['requestCancel' as const, because((c) => `cancel requested; stopping it ${on(c)}`)];

const listed = (state: RunnerStatus['state']) => ({ type: 'listed' as const, params: { state } });

const settled = (outcome: AttemptResult['outcome']) => ({ type: 'final' as const, entry: { type: 'settle' as const, params: { outcome } } });

const adopted: Record<Exclude<AttemptInitial, 'locked'>, string> = {
  uncertain: 'a start whose result is unknown',
  running: 'running',
  cancelling: 'being cancelled',
};

export const containerMachine = setup({
  types: {
    context: {} as ContainerAttemptContext,
    events: {} as ContainerAttemptEvent,
    input: {} as ContainerAttemptInput,
    output: {} as AttemptResult,
  },
  actors: {
    startContainer: fromPromise<StartOutcome, AttemptRef>(async () => notProvided('startContainer')),
    killContainer: fromPromise<KillOutcome, KillContainerInput>(async () => notProvided('killContainer')),
    collectLogs: fromPromise<string, AttemptRef>(async () => notProvided('collectLogs')),
    removeContainer: fromPromise<void, AttemptRef>(async () => notProvided('removeContainer')),
  },
  actions: {
    // The pool writes the durable queue in these.
    recordRunning: (_, _params: { uuid: string; instanceId: string }) => {},
    recordExit: (_, _params: { uuid: string; exitCode: number }) => {},
    recordLogs: (_, _params: { uuid: string; logTail: string }) => {},
    /** lost: it had been running, so the queue counts the attempt; otherwise an unlock. */
    recordRequeue: (_, _params: { uuid: string; reason: string; lost: boolean }) => {},
    recordFailed: (_, _params: { uuid: string; reason: string }) => {},
    // A start given up on may still show up later; whoever sees it then must kill it.
    orderKill: (_, _params: { uuid: string; instanceId: string }) => {},
    because: assign((_, params: { reason: string }) => ({ reason: params.reason })),
    noteExit: assign(({ event }) => ({ exitCode: exitCodeOf(event) })),
    requestCancel: assign({ cancelRequested: true }),
    settle: assign((_, params: { outcome: AttemptResult['outcome'] }) => ({ outcome: params.outcome })),
    signalSent: assign(({ context }) => ({ termDelivered: true, killsSent: context.killsSent + 1, lastSignal: nextSignal(context) })),
    startAnswered: assign((_, params: { outcome: StartOutcome }) => ({ since: sinceOf(params.outcome) })),
    // A failed call says nothing about when the runner might have acted: no list can clear it.
    startFailed: assign((_, params: { error: unknown }) => ({ since: Infinity, lastError: errorMessage(params.error) })),
    noteError: assign((_, params: { error: unknown }) => ({ lastError: errorMessage(params.error) })),
  },
  guards: {
    // A list begun before `since` may predate the start, so it says nothing about this attempt.
    listed: ({ context, event }, params: { state: RunnerStatus['state'] }) =>
      event.type === 'RUNNER_LISTED' && event.listedAt > context.since && event.status.state === params.state,
    adoptedAs: ({ context }, params: { initial: AttemptInitial }) => context.initial === params.initial,
    cancelRequested: ({ context }) => context.cancelRequested,
  },
  delays: {
    // Defaults; the pool provides its configured values.
    uncertainDeadline: 10 * 60_000,
    killRetry: 30_000,
  },
}).createMachine({
  id: 'container',
  initial: 'arriving',
  context: ({ input }) => ({
    uuid: input.uuid,
    workerId: input.workerId,
    instanceId: input.instanceId,
    initial: input.initial,
    since: input.since ?? 0,
    reason: `locked for a start on instance ${input.instanceId}`,
    exitCode: null,
    cancelRequested: input.initial === 'cancelling',
    termDelivered: false,
    killsSent: 0,
    lastSignal: null,
    lastError: null,
    outcome: null,
  }),
  output: ({ context }) => ({ outcome: context.outcome ?? 'failed', reason: context.reason }),
  states: {
    arriving: {
      always: [
        ...(['uncertain', 'running', 'cancelling'] as const).map((initial) => ({
          guard: { type: 'adoptedAs' as const, params: { initial } },
          target: initial,
          actions: because((c) => `adopted as ${adopted[initial]} ${on(c)}`),
        })),
        { target: 'locked' },
      ],
    },
    locked: {
      tags: ['allocated'],
      always: { target: 'starting', actions: because((c) => `starting ${on(c)}`) },
    },
    starting: {
      tags: ['allocated', 'unconfirmed'],
      on: {
        // The start call cannot be taken back: what to stop depends on what it did.
        CANCEL: { actions: ['requestCancel', because((c) => `cancel requested while starting ${on(c)}`)] },
        // The container cannot be running on an instance that no longer exists.
        INSTANCE_GONE: { target: 'requeued', actions: requeue(false, gone) },
        // The watch session can report the exit before the start's own answer arrives (a short
        // container); it is reported once, so it is kept until the answer comes.
        EXITED: { actions: ['noteExit', because((c) => `exited with ${c.exitCode ?? '?'} ${on(c)} before its start was answered`)] },
      },
      invoke: {
        src: 'startContainer',
        input: ref,
        onDone: [
          {
            guard: ({ context, event }) => context.cancelRequested && event.output.kind === 'refused',
            target: 'done',
            actions: because((c) => `cancelled before it started ${on(c)}`),
          },
          {
            guard: ({ context, event }) => context.exitCode !== null && event.output.kind !== 'refused',
            target: 'finishing',
            actions: [startAnswered, recordRunning, recordExit, because((c) => ended(c, 'started and exited'))],
          },
          { guard: 'cancelRequested', target: 'cancelling', actions: [startAnswered, because((c) => `cancelled while starting; stopping it ${on(c)}`)] },
          { guard: answered('started'), target: 'running', actions: [startAnswered, recordRunning, because((c) => `started ${on(c)}`)] },
          { guard: answered('refused', 'container'), target: 'failed', actions: [because(replied('refused')), recordFailed] },
          { guard: answered('refused', 'instance'), target: 'requeued', actions: requeue(false, replied('the instance refused it')) },
          { target: 'uncertain', actions: [startAnswered, because(replied('start unconfirmed'))] },
        ],
        onError: [
          {
            // The watch saw it exit: it ran, whatever became of the call's answer.
            guard: ({ context }) => context.exitCode !== null,
            target: 'finishing',
            actions: [startFailed, recordRunning, recordExit, because((c) => ended(c, 'started and exited'))],
          },
          {
            guard: 'cancelRequested',
            target: 'cancelling',
            actions: [startFailed, because((c) => `cancelled; the start call failed (${c.lastError ?? ''}); stopping it ${on(c)}`)],
          },
          {
            target: 'uncertain',
            actions: [startFailed, because((c) => `start call failed ${on(c)} (${c.lastError ?? ''}); only the deadline can settle it`)],
          },
        ],
      },
    },
    uncertain: {
      tags: ['allocated', 'unconfirmed'],
      after: {
        uncertainDeadline: {
          target: 'abandoning',
          actions: because((c) => `no runner list ${on(c)} confirmed the start within the deadline; killing whatever started`),
        },
      },
      on: {
        RUNNER_LISTED: [
          { guard: listed('running'), target: 'running', actions: [recordRunning, because((c) => `a runner list shows it running ${on(c)}`)] },
          { guard: listed('exited'), target: 'finishing', actions: [recordRunning, ...exited] },
          { guard: listed('absent'), target: 'requeued', actions: requeue(false, (c) => `the runner ${on(c)} has no record of it`) },
        ],
        EXITED: { target: 'finishing', actions: [recordRunning, ...exited] },
        CANCEL: { target: 'cancelling', actions: cancel },
        INSTANCE_GONE: { target: 'requeued', actions: requeue(false, gone) },
      },
    },
    // A start given up on is killed before the container goes back to the queue, so a new start
    // (on this instance, or another) cannot meet a kill meant for the old one.
    abandoning: {
      tags: ['allocated', 'unconfirmed'],
      on: {
        INSTANCE_GONE: { target: 'requeued', actions: requeue(false, gone) },
        // It did run, and ran to its end: that is its result.
        EXITED: { target: 'finishing', actions: [recordRunning, ...exited] },
      },
      invoke: {
        src: 'killContainer',
        input: ({ context }) => ({ ...ref({ context }), signal: 'KILL' as const }),
        onDone: {
          target: 'requeued',
          actions: requeue(false, (c) => `no runner list ${on(c)} confirmed the start within the deadline; killed there`),
        },
        // Unreachable: whoever sees it on that instance later kills it unless the queue gives it back there.
        onError: {
          target: 'requeued',
          actions: [
            noteError,
            { type: 'orderKill', params: where },
            ...requeue(false, (c) => `no runner list ${on(c)} confirmed the start within the deadline; the instance did not answer a kill`),
          ],
        },
      },
    },
    running: {
      tags: ['allocated'],
      on: {
        EXITED: { target: 'finishing', actions: exited },
        RUNNER_LISTED: [
          { guard: listed('exited'), target: 'finishing', actions: exited },
          { guard: listed('absent'), target: 'requeued', actions: requeue(true, (c) => `lost: the runner ${on(c)} no longer lists it`) },
        ],
        INSTANCE_GONE: { target: 'requeued', actions: requeue(true, gone) },
        CANCEL: { target: 'cancelling', actions: cancel },
      },
    },
    finishing: {
      initial: 'collecting',
      states: {
        collecting: {
          invoke: {
            src: 'collectLogs',
            input: ref,
            onDone: {
              target: 'removing',
              actions: { type: 'recordLogs', params: ({ context, event }) => ({ uuid: context.uuid, logTail: event.output }) },
            },
            // Logs are a courtesy: the exit is already recorded, and the container must still go.
            onError: { target: 'removing', actions: noteError },
          },
        },
        removing: {
          invoke: {
            src: 'removeContainer',
            input: ref,
            onDone: { target: '#container.done', actions: because((c) => ended(c, 'finished')) },
            onError: {
              target: '#container.done',
              actions: [noteError, because((c) => `${ended(c, 'finished')}; removing it failed: ${c.lastError ?? ''}`)],
            },
          },
        },
      },
    },
    cancelling: {
      tags: ['allocated'],
      initial: 'signalling',
      // An instance that never answers must not be held busy forever by a container already cancelled.
      after: {
        uncertainDeadline: {
          target: 'done',
          actions: [{ type: 'orderKill', params: where }, because((c) => `cancelled; ${on(c)} no kill was confirmed within the deadline`)],
        },
      },
      on: {
        EXITED: { target: 'finishing', actions: exited },
        RUNNER_LISTED: [
          { guard: listed('exited'), target: 'finishing', actions: exited },
          { guard: listed('absent'), target: 'done', actions: because((c) => `cancelled: the runner ${on(c)} no longer lists it`) },
        ],
        INSTANCE_GONE: { target: 'done', actions: because((c, e: { reason: string }) => `cancelled: ${gone(c, e)}`) },
      },
      states: {
        // TERM until one is delivered, then KILL every killRetry until the container has ended.
        signalling: {
          invoke: {
            src: 'killContainer',
            input: ({ context }) => ({ ...ref({ context }), signal: nextSignal(context) }),
            onDone: [
              {
                guard: ({ event }) => event.output === 'gone',
                target: '#container.done',
                actions: because((c) => `cancelled: the runner ${on(c)} has no such container`),
              },
              { target: 'waiting', actions: 'signalSent' },
            ],
            onError: { target: 'waiting', actions: noteError },
          },
        },
        waiting: { after: { killRetry: 'signalling' } },
      },
    },
    done: settled('done'),
    requeued: settled('requeued'),
    failed: settled('failed'),
  },
});

export type ContainerMachine = typeof containerMachine;
