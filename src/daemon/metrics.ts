// Prometheus gauges for the pool and the queue, computed when /metrics is scraped (never on a timer).
import { Gauge, type Registry } from 'prom-client';
import type { Pool } from '../pool/pool.js';
import type { QueueHealth } from '../queue/storage.js';
import type { ContainerQueue, ContainerState } from '../queue/types.js';

const activeStates: ContainerState[] = ['queued', 'locked', 'running'];

export function registerDroverMetrics(registry: Registry, pool: Pool, queue: ContainerQueue & { health(): QueueHealth }): void {
  new Gauge({
    name: 'drover_instances',
    help: 'Instances the pool knows, by lifecycle state, idle behaviour and instance type.',
    labelNames: ['state', 'idle_behavior', 'instance_type'],
    registers: [registry],
    collect() {
      this.reset();
      for (const view of pool.instances()) {
        this.inc({ state: view.state, idle_behavior: view.idleBehavior, instance_type: view.instanceType });
      }
    },
  });
  new Gauge({
    name: 'drover_instances_hourly_price',
    help: 'Sum of the hourly prices of every instance the pool knows, creating ones included.',
    registers: [registry],
    collect() {
      this.set(pool.hourlySpend());
    },
  });
  new Gauge({
    name: 'drover_orphan_instances',
    help: "Instances with this pool's tag but an instance type the config does not define.",
    registers: [registry],
    collect() {
      this.set(pool.orphans().length);
    },
  });
  new Gauge({
    name: 'drover_pool_creates_refused',
    help: 'Whether creates are refused now, by cause (1 = refused).',
    labelNames: ['cause'],
    registers: [registry],
    collect() {
      const status = pool.status();
      this.set({ cause: 'unloaded' }, status.loaded ? 0 : 1);
      this.set({ cause: 'stale_listing' }, status.stale ? 1 : 0);
      this.set({ cause: 'quota' }, status.atQuota ? 1 : 0);
      this.set({ cause: 'create_rate_limit' }, status.throttled.includes('create') ? 1 : 0);
      this.set({ cause: 'frozen' }, status.frozen === null ? 0 : 1);
      this.set({ cause: 'no_capacity_anywhere' }, status.capacityExhausted.includes('* in *') ? 1 : 0);
    },
  });
  new Gauge({
    name: 'drover_max_instances_estimate',
    help: 'Instances the pool estimates the cloud quota allows, from its quota errors and listings; creates stop at it. -1: no estimate (no quota error seen).',
    registers: [registry],
    collect() {
      this.set(pool.status().quotaEstimate ?? -1);
    },
  });
  new Gauge({
    name: 'drover_containers',
    help: 'Containers waiting or running, by queue state.',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const counts = new Map<ContainerState, number>(activeStates.map((state) => [state, 0]));
      for (const container of queue.pending()) counts.set(container.state, (counts.get(container.state) ?? 0) + 1);
      for (const [state, count] of counts) this.set({ state }, count);
    },
  });
  new Gauge({
    name: 'drover_queue_healthy',
    help: 'Whether the queue file takes changes (0 from a refused write, such as a full disk, until one succeeds; for good once it is found corrupt).',
    registers: [registry],
    collect() {
      this.set(queue.health().ok ? 1 : 0);
    },
  });
}
