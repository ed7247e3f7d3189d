// What the owners of actors (the pool, its attempts and launch configs, the dispatcher) see of the
// Stately inspector: one question per root actor they create. Kept apart from the inspector so
// none of them depends on it, and so a daemon without inspection hands them nothing at all.
import type { InspectionEvent, Observer } from 'xstate';

/** A root actor about to be created, with what the `inspect.actors` filter may choose it by. */
export type InspectedActor =
  | { kind: 'pool' }
  | { kind: 'scheduler' }
  | { kind: 'launchConfig'; id: string }
  | { kind: 'capacityScope'; scope: string }
  | { kind: 'container'; uuid: string }
  // The cloud id comes later for an instance the pool creates, so it is read when events come.
  | { kind: 'instance'; workerId: string; instanceId: () => string | null };

export interface ActorInspection {
  /**
   * The observer to create the actor with (`createActor(logic, { inspect })`); undefined when the
   * filter leaves it out, and then it must be created without one: an actor system with no
   * inspection observer does no inspection work.
   */
  observerFor(actor: InspectedActor): Observer<InspectionEvent> | undefined;
}

const noInspect: { inspect?: Observer<InspectionEvent> } = Object.freeze({});

/** createActor's options spread with the observer, or with nothing when there is none. */
export function inspectOption(inspect: Observer<InspectionEvent> | undefined): { inspect?: Observer<InspectionEvent> } {
  return inspect ? { inspect } : noInspect;
}
