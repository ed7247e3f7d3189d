// When the scheduler runs a pass: on every pool or queue change and at least every
// pollInterval, never two passes at once, never closer than passGap (a pass that changes the
// queue would otherwise re-trigger itself without ever yielding), and once more after a pass if
// anything changed while it ran. Pure: the pass itself is an actor supplied by src/scheduler with .provide().
import { assign, fromPromise, setup } from 'xstate';

export type SchedulerEvent = { type: 'POOL_CHANGED' } | { type: 'QUEUE_CHANGED' } | { type: 'STOP_REQUESTED' };

export interface SchedulerContext {
  /** Something changed during the running pass, so its picture is already old. */
  changedDuringPass: boolean;
  passes: number;
  lastError: string | null;
}

export const schedulerMachine = setup({
  types: {
    context: {} as SchedulerContext,
    events: {} as SchedulerEvent,
  },
  actors: {
    runPass: fromPromise<void>(async () => {
      throw new Error('scheduler machine: runPass must be supplied with .provide()');
    }),
  },
  actions: {
    passFailed: (_, _params: { error: unknown }) => {},
  },
  guards: {
    changedDuringPass: ({ context }) => context.changedDuringPass,
  },
  delays: {
    pollInterval: 10_000,
    passGap: 100,
  },
}).createMachine({
  id: 'scheduler',
  initial: 'planning',
  context: { changedDuringPass: false, passes: 0, lastError: null },
  on: { STOP_REQUESTED: '.stopped' },
  states: {
    waiting: {
      always: { guard: 'changedDuringPass', target: 'planning' },
      on: { POOL_CHANGED: 'planning', QUEUE_CHANGED: 'planning' },
      after: { pollInterval: 'planning' },
    },
    planning: {
      entry: assign({ changedDuringPass: false }),
      invoke: {
        src: 'runPass',
        onDone: { target: 'resting', actions: assign({ passes: ({ context }) => context.passes + 1, lastError: null }) },
        onError: {
          target: 'resting',
          actions: [
            assign({
              passes: ({ context }) => context.passes + 1,
              lastError: ({ event }) => (event.error instanceof Error ? event.error.message : String(event.error)),
            }),
            { type: 'passFailed', params: ({ event }) => ({ error: event.error }) },
          ],
        },
      },
      on: {
        POOL_CHANGED: { actions: assign({ changedDuringPass: true }) },
        QUEUE_CHANGED: { actions: assign({ changedDuringPass: true }) },
      },
    },
    resting: {
      after: { passGap: 'waiting' },
      on: {
        POOL_CHANGED: { actions: assign({ changedDuringPass: true }) },
        QUEUE_CHANGED: { actions: assign({ changedDuringPass: true }) },
      },
    },
    stopped: { type: 'final' },
  },
});

export type SchedulerMachine = typeof schedulerMachine;
