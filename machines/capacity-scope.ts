// One capacity scope of the cloud: an instance type in a zone, a type anywhere, a whole zone, or
// the whole account, as a capacity error says. A capacity error backs creates in the scope off for
// one back-off (the pool's quotaErrorTTL); the pool refuses a create if any scope covering it is
// backing off. Pure: the back-off is a named delay, and telling the pool it ended is an action.
import { assign, setup } from 'xstate';

export interface CapacityScopeInput {
  /** How long one capacity error backs creates in the scope off (quotaErrorTTL). */
  backoffMs: number;
}

export interface CapacityScopeContext {
  backoffMs: number;
  /** Clock ms of the first capacity error of the current shortage (errors within one back-off of the last one's end continue it). */
  since: number;
  /** Clock ms at which the last back-off ends (or ended). */
  until: number;
  lastError: string;
}

export type CapacityScopeEvent = { type: 'CAPACITY_ERROR'; at: number; message: string };

export const capacityScopeMachine = setup({
  types: {
    context: {} as CapacityScopeContext,
    events: {} as CapacityScopeEvent,
    input: {} as CapacityScopeInput,
    tags: {} as 'backingOff',
  },
  actions: {
    // Supplied by the pool: a back-off ended, so a create refused for it may go ahead now.
    notifyChanged: () => {},
    recordError: assign(({ context, event }) => ({
      since: event.at <= context.until + context.backoffMs ? context.since : event.at,
      until: event.at + context.backoffMs,
      lastError: event.message,
    })),
  },
  delays: {
    capacityBackoff: ({ context }) => context.backoffMs,
  },
}).createMachine({
  id: 'capacityScope',
  context: ({ input }) => ({ backoffMs: input.backoffMs, since: 0, until: -Infinity, lastError: '' }),
  initial: 'available',
  states: {
    available: {
      on: { CAPACITY_ERROR: { target: 'backingOff', actions: 'recordError' } },
    },
    backingOff: {
      tags: ['backingOff'],
      // A later error restarts the wait.
      on: { CAPACITY_ERROR: { target: 'backingOff', reenter: true, actions: 'recordError' } },
      after: { capacityBackoff: { target: 'available', actions: 'notifyChanged' } },
    },
  },
});

export type CapacityScopeMachine = typeof capacityScopeMachine;
