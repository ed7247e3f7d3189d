// Runs the container attempt machine on XState's SimulatedClock with runner calls the test scripts
// and queue writes it records, all in one log so tests can check what happened in which order.
import { createActor, fromPromise, SimulatedClock, type Actor } from 'xstate';
import {
  containerMachine,
  type AttemptRef,
  type ContainerAttemptInput,
  type KillContainerInput,
  type KillOutcome,
  type StartOutcome,
} from '../../machines/container.js';

export const delays = { uncertainDeadline: 600_000, killRetry: 30_000 };

/** A promise the test settles when it wants the call to return. */
export class Deferred<T> {
  resolve!: (value: T) => void;
  reject!: (error: Error) => void;
  readonly promise = new Promise<T>((resolve, reject) => {
    this.resolve = resolve;
    this.reject = reject;
  });
}

/** What a call answers: a value, a rejection, or a promise the test holds. */
export type Answer<T> = T | Error | Deferred<T>;

export interface Scripts {
  start: Answer<StartOutcome>[];
  kill: Answer<KillOutcome>[];
  logs: Answer<string>[];
  remove: Answer<void>[];
}

export interface LogEntry {
  name: string;
  detail: unknown;
}

/** The next answer from a script; the last one repeats. */
function next<T>(script: Answer<T>[]): Promise<T> {
  const answer = script.length > 1 ? script.shift()! : script[0]!;
  if (answer instanceof Deferred) return answer.promise;
  if (answer instanceof Error) return Promise.reject(answer);
  return Promise.resolve(answer);
}

export class ContainerHarness {
  readonly clock = new SimulatedClock();
  readonly actor: Actor<typeof containerMachine>;
  readonly log: LogEntry[] = [];
  readonly scripts: Scripts;

  constructor(input: Partial<ContainerAttemptInput> = {}, scripts: Partial<Scripts> = {}) {
    this.scripts = {
      start: [{ kind: 'started', at: 1_000 }],
      kill: ['sent'],
      logs: ['log tail'],
      remove: [undefined],
      ...scripts,
    };
    const call =
      <I, T>(name: string, script: Answer<T>[]) =>
      ({ input }: { input: I }) => {
        this.log.push({ name, detail: input });
        return next(script);
      };
    const record = (name: string) => (_: unknown, params: unknown) => {
      this.log.push({ name, detail: params });
    };
    const machine = containerMachine.provide({
      delays,
      actors: {
        startContainer: fromPromise<StartOutcome, AttemptRef>(call('startContainer', this.scripts.start)),
        killContainer: fromPromise<KillOutcome, KillContainerInput>(call('killContainer', this.scripts.kill)),
        collectLogs: fromPromise<string, AttemptRef>(call('collectLogs', this.scripts.logs)),
        removeContainer: fromPromise<void, AttemptRef>(call('removeContainer', this.scripts.remove)),
      },
      actions: {
        recordRunning: record('recordRunning'),
        recordExit: record('recordExit'),
        recordLogs: record('recordLogs'),
        recordRequeue: record('recordRequeue'),
        recordFailed: record('recordFailed'),
        orderKill: record('orderKill'),
      },
    });
    this.actor = createActor(machine, {
      clock: this.clock,
      input: { uuid: 'c-1', workerId: 'w-1', instanceId: 'i-1', initial: 'locked', ...input },
    });
    this.actor.start();
  }

  get snapshot() {
    return this.actor.getSnapshot();
  }

  /** The top-level state name. */
  state(): string {
    const value = this.snapshot.value;
    return typeof value === 'string' ? value : Object.keys(value)[0]!;
  }

  names(): string[] {
    return this.log.map((entry) => entry.name);
  }

  /** The details of every logged call or action with this name, in order. */
  details(name: string): unknown[] {
    return this.log.filter((entry) => entry.name === name).map((entry) => entry.detail);
  }

  signals(): string[] {
    return this.details('killContainer').map((input) => (input as KillContainerInput).signal);
  }

  send(event: Parameters<typeof this.actor.send>[0]): Promise<void> {
    this.actor.send(event);
    return this.settle();
  }

  /** Lets promise-based actors settle and their done events be processed. */
  async settle(): Promise<void> {
    for (let i = 0; i < 5; i++) await Promise.resolve();
    await new Promise<void>((resolve) => setImmediate(resolve));
  }

  async advance(ms: number): Promise<void> {
    this.clock.increment(ms);
    await this.settle();
  }
}
