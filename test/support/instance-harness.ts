// Runs the instance machine on XState's SimulatedClock with side-effect actors the test controls,
// and a set of container uuids standing in for the pool's allocation ledger.
import { createActor, fromPromise, SimulatedClock, type Actor } from 'xstate';
import type { CloudInstance } from '../../src/cloud/driver.js';
import { idleBehaviorOf, lifecycleOf } from '../../src/pool/worker.js';
import {
  instanceMachine,
  type CreateInstanceInput,
  type IdleBehavior,
  type InstanceRef,
  type ProbeInput,
  type InstanceInput,
  type Lifecycle,
  type ProbeResult,
} from '../../machines/instance.js';

export const timeouts = { timeoutBooting: 600_000, timeoutIdle: 60_000, timeoutProbe: 30_000, timeoutShutdown: 10_000, timeoutTERM: 120_000 };

export function cloudInstance(id = 'i-1'): CloudInstance {
  return { id, providerType: 't3.small', address: '10.0.0.1', port: 22, tags: {} };
}

/** `running`, when given, is what the runner's list puts in the ledger (the pool's job). */
type ProbeAnswer = { booted: false } | { booted: true; running?: string[] } | Error;

export class InstanceHarness {
  readonly clock = new SimulatedClock();
  readonly actor: Actor<typeof instanceMachine>;
  readonly destroyed: string[] = [];
  /** Containers accepted by CONTAINER_ASSIGNED, in order. */
  readonly started: string[] = [];
  /** The ledger: containers on this instance. */
  readonly containers = new Set<string>();
  readonly savedBehaviors: IdleBehavior[] = [];
  /** What the next probes answer; the last entry repeats. */
  probeAnswers: ProbeAnswer[] = [{ booted: true, running: [] }];
  createOutcome: CloudInstance | Error = cloudInstance();
  /** While set, probes wait for it before answering. */
  probeGate: Promise<void> | null = null;
  private pendingCreate: (() => void) | null = null;

  constructor(input: Partial<InstanceInput> = {}, options: { holdCreate?: boolean } = {}) {
    const machine = instanceMachine.provide({
      delays: timeouts,
      actors: {
        createInstance: fromPromise<CloudInstance, CreateInstanceInput>(
          () =>
            new Promise((resolve, reject) => {
              const settle = () => (this.createOutcome instanceof Error ? reject(this.createOutcome) : resolve(this.createOutcome));
              if (options.holdCreate) this.pendingCreate = settle;
              else settle();
            }),
        ),
        probeInstance: fromPromise<ProbeResult, ProbeInput>(async ({ input }) => {
          if (this.probeGate) await this.probeGate;
          const answer = this.probeAnswers.length > 1 ? this.probeAnswers.shift()! : this.probeAnswers[0]!;
          if (answer instanceof Error) throw answer;
          if (answer.booted && answer.running) this.setContainers(answer.running, false);
          return { booted: answer.booted && input.instance !== null };
        }),
        destroyInstance: fromPromise<void, InstanceRef>(async ({ input }) => {
          this.destroyed.push(input.instance.id);
        }),
      },
      guards: { containersRunning: () => this.containers.size > 0 },
      actions: {
        saveIdleBehavior: (_, params: { idleBehavior: IdleBehavior }) => {
          this.savedBehaviors.push(params.idleBehavior);
        },
      },
    });
    this.actor = createActor(machine, {
      clock: this.clock,
      input: { workerId: 'w-1', instanceType: 'small', idleBehavior: 'run', ...input },
    });
    this.actor.start();
  }

  /** Places a container the way the pool does: only if the machine takes it, ledger first. */
  assign(uuid: string): boolean {
    const event = { type: 'CONTAINER_ASSIGNED', containerUuid: uuid } as const;
    if (!this.actor.getSnapshot().can(event)) return false;
    this.containers.add(uuid);
    this.started.push(uuid);
    this.actor.send(event);
    return true;
  }

  /** Replaces the ledger's containers; tells the machine unless a probe result will. */
  setContainers(uuids: readonly string[], notify = true): void {
    this.containers.clear();
    for (const uuid of uuids) this.containers.add(uuid);
    if (notify) this.actor.send({ type: 'ALLOCATIONS_CHANGED' });
  }

  releaseCreate(): void {
    this.pendingCreate?.();
    this.pendingCreate = null;
  }

  lifecycle(): Lifecycle {
    return lifecycleOf(this.actor.getSnapshot());
  }

  idleBehavior(): string | null {
    return idleBehaviorOf(this.actor.getSnapshot());
  }

  /** Lets promise-based actors settle and their done events be processed. */
  async settle(): Promise<void> {
    for (let i = 0; i < 5; i++) await Promise.resolve();
    await new Promise<void>((resolve) => setImmediate(resolve));
  }

  async probe(): Promise<void> {
    this.actor.send({ type: 'PROBE_DUE' });
    await this.settle();
  }

  async advance(ms: number): Promise<void> {
    this.clock.increment(ms);
    await this.settle();
  }
}
