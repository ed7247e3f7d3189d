// The daemon's API deps over a real queue file in a temporary directory and an empty pool, for
// tests that serve the HTTP API to the drover CLI.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import type { ApiDeps } from '../../src/http/server.js';
import {
  LaunchConfigStateError,
  UnknownLaunchConfigError,
  type LaunchConfigAction,
  type LaunchConfigControl,
  type LaunchConfigView,
} from '../../src/pool/launch-config-view.js';
import { SqliteQueue } from '../../src/queue/sqlite-queue.js';

export interface ApiFixture {
  /** The temporary directory the queue file is in; close() removes it. */
  dir: string;
  queue: SqliteQueue;
  deps: ApiDeps;
  close(): void;
}

/** A pool with no launch configs, whose creates are never frozen. */
export const noLaunchConfigs: LaunchConfigControl = {
  launchConfigs: () => [],
  changeLaunchConfig: (id) => {
    throw new UnknownLaunchConfigError(id);
  },
  resumeCreates: () => false,
  createsFrozen: () => null,
};

/** A launch config as the pool would show it: active, weight 1, nothing recent; `overrides` set the rest. */
export function launchConfigView(overrides: Partial<LaunchConfigView> & { id: string }): LaunchConfigView {
  return {
    instanceType: 'small',
    zone: 'zone-a',
    region: null,
    subnet: null,
    image: 'image-1',
    weight: 1,
    effectiveWeight: 1,
    maxInstances: null,
    state: 'active',
    inConfig: true,
    instances: 0,
    recent: { successes: 0, failures: 0, windowMs: 3_600_000 },
    consecutiveBootFailures: 0,
    lastError: null,
    nextTrialAt: null,
    refusal: null,
    ...overrides,
  };
}

/** One call the API made on FakeLaunchConfigs. */
export type LaunchConfigCall = { method: 'launchConfigs' | 'createsFrozen' | 'resumeCreates' } | { method: 'changeLaunchConfig'; id: string; action: LaunchConfigAction };

/**
 * The launch-config face of a pool over fixed views, recording every call. Pause and resume are
 * refused for an archived config (LaunchConfigStateError), as the pool refuses them; an unknown id
 * is UnknownLaunchConfigError. `frozen` is why every create is frozen, or null.
 */
export class FakeLaunchConfigs implements LaunchConfigControl {
  readonly views = new Map<string, LaunchConfigView>();
  readonly calls: LaunchConfigCall[] = [];
  frozen: string | null = null;

  add(view: LaunchConfigView): LaunchConfigView {
    this.views.set(view.id, view);
    return view;
  }

  launchConfigs(): LaunchConfigView[] {
    this.calls.push({ method: 'launchConfigs' });
    return [...this.views.values()];
  }

  changeLaunchConfig(id: string, action: LaunchConfigAction): LaunchConfigView {
    this.calls.push({ method: 'changeLaunchConfig', id, action });
    const view = this.views.get(id);
    if (view === undefined) throw new UnknownLaunchConfigError(id);
    if (action !== 'archive' && view.state === 'archived') throw new LaunchConfigStateError(id, `launch config ${id} is archived; it cannot ${action}`);
    const state = action === 'pause' ? 'paused' : action === 'resume' ? 'active' : 'archived';
    const next = { ...view, state, refusal: state === 'active' ? null : `launch config ${id} is ${state}` } satisfies LaunchConfigView;
    this.views.set(id, next);
    return next;
  }

  resumeCreates(): boolean {
    this.calls.push({ method: 'resumeCreates' });
    const was = this.frozen !== null;
    this.frozen = null;
    return was;
  }

  createsFrozen(): string | null {
    this.calls.push({ method: 'createsFrozen' });
    return this.frozen;
  }
}

/** `prefix` names the temporary directory; `liveLogs`, when given, is the deps' live output. */
export function apiFixture(options: { prefix: string; token: string; liveLogs?: ApiDeps['liveLogs'] }): ApiFixture {
  const dir = mkdtempSync(join(tmpdir(), options.prefix));
  const queue = new SqliteQueue({ path: join(dir, 'queue.sqlite'), maxAttempts: 3 });
  const deps: ApiDeps = {
    queue,
    pool: { instances: () => [], orphans: () => [], instance: () => undefined, setIdleBehavior: () => undefined, shutdown: () => false },
    launchConfigs: noLaunchConfigs,
    token: options.token,
    registry: new Registry(),
    logger: pino({ level: 'silent' }),
  };
  if (options.liveLogs !== undefined) deps.liveLogs = options.liveLogs;
  return {
    dir,
    queue,
    deps,
    close: () => {
      queue.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
