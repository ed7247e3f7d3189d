// Runs the instance machine on XState's SimulatedClock with side-effect actors the test controls.
import { createActor, fromPromise, SimulatedClock, type Actor } from 'xstate';
import type { CloudInstance } from '../../src/cloud/driver.js';
import {
  instanceMachine,
  type CreateInstanceInput,
  type IdleBehavior,
  type InstanceRef,
  type ProbeInput,
  type StartContainerInput,
  type InstanceInput,
  type Lifecycle,
  type ProbeResult,
} from '../../machines/instance.js';

export const timeouts = { timeoutBooting: 600_000, timeoutIdle: 60_000, timeoutProbe: 30_000, timeoutShutdown: 10_000 };

export function cloudInstance(id = 'i-1'): CloudInstance {
  return { id, providerType: 't3.small', address: '10.0.0.1', port: 22, tags: {} };
}

type ProbeAnswer = { booted: false } | { booted: true; running: string[] } | Error;

export class InstanceHarness {
  readonly clock = new SimulatedClock();
  readonly actor: Actor<typeof instanceMachine>;
  readonly destroyed: string[] = [];
  readonly started: string[] = [];
  readonly savedBehaviors: IdleBehavior[] = [];
  /** What the next probes answer; the last entry repeats. */
  probeAnswers: ProbeAnswer[] = [{ booted: true, running: [] }];
  createOutcome: CloudInstance | Error = cloudInstance();
  startOutcome: Error | null = null;
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
          return { ...answer, startGeneration: input.startGeneration };
        }),
        startContainer: fromPromise<void, StartContainerInput>(async ({ input }) => {
          if (this.startOutcome) throw this.startOutcome;
          this.started.push(input.containerUuid);
        }),
        destroyInstance: fromPromise<void, InstanceRef>(async ({ input }) => {
          this.destroyed.push(input.instance.id);
        }),
      },
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

  releaseCreate(): void {
    this.pendingCreate?.();
    this.pendingCreate = null;
  }

  lifecycle(): Lifecycle {
    const value = this.actor.getSnapshot().value as { lifecycle: string | Record<string, unknown> };
    return (typeof value.lifecycle === 'string' ? value.lifecycle : Object.keys(value.lifecycle)[0]) as Lifecycle;
  }

  idleBehavior(): string {
    return (this.actor.getSnapshot().value as { idleBehavior: string }).idleBehavior;
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
