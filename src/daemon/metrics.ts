// Prometheus metrics of the pool, the queue and the scheduler. Gauges and the counts the pool keeps
// are computed when /metrics is scraped (never on a timer); durations and losses the pool and the
// dispatcher report as they happen come in through their observer interfaces (DroverMetrics), so
// neither of them imports prom-client.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Clock } from '../clock.js';
import type { InstanceType } from '../cloud/driver.js';
import type { Lifecycle } from '../../machines/instance.js';
import type { Pool } from '../pool/pool.js';
import { probeOutcomes, type PoolObserver, type ProbeOutcome } from '../pool/pool-observer.js';
import type { QueueHealth } from '../queue/storage.js';
import type { Constraints, ContainerQueue, ContainerState } from '../queue/types.js';
import type { DispatcherObserver } from '../scheduler/dispatcher.js';
import { chooseInstanceType } from '../scheduler/instance-type.js';

const activeStates: ContainerState[] = ['queued', 'locked', 'running'];
/** The states an instance can vanish in: one creating is never judged missing, one shut down or failed went as expected. */
const vanishingStates: Lifecycle[] = ['unknown', 'booting', 'idle', 'running'];
const mebibyte = 1024 * 1024;
/** The instance_type of a queued container no configured type fits (the next pass fails it). */
const noFittingType = 'none';

// Buckets in seconds, each spanning what its durations plausibly take: a VM boots in tens of
// seconds to minutes (timeoutBooting defaults to 10 min); a container may wait from a start on an
// idle instance to hours behind a limit; a pass is CPU only; a probe is one or two SSH commands of
// at most commandTimeoutMs (60 s); a shutdown ends at the first listing (syncInterval, 1 min) after
// the destroy, longer when destroys are retried.
const bootBuckets = [5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 900, 1800];
const waitBuckets = [0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 21600];
const passBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2];
const probeBuckets = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const shutdownBuckets = [1, 5, 10, 30, 60, 120, 300, 600];

/** What the pool and the dispatcher report as it happens, kept as Prometheus counters and histograms. */
export class DroverMetrics implements PoolObserver, DispatcherObserver {
  private readonly bootSeconds: Histogram;
  private readonly waitSeconds: Histogram;
  private readonly passSeconds: Histogram;
  private readonly probeSeconds: Histogram<'outcome'>;
  private readonly shutdownSeconds: Histogram;
  private readonly disappearances: Counter<'state'>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.bootSeconds = new Histogram({
      name: 'drover_boot_seconds',
      help: 'Time from the create of an instance this pool made to its first passing boot probe.',
      buckets: bootBuckets,
      registers,
    });
    this.waitSeconds = new Histogram({
      name: 'drover_container_queue_wait_seconds',
      help: 'Time from the submit of a container to its first start, observed once per container.',
      buckets: waitBuckets,
      registers,
    });
    this.passSeconds = new Histogram({
      name: 'drover_scheduler_pass_seconds',
      help: 'Wall time of one scheduling pass (reconcile, plan, act), which holds the event loop throughout.',
      buckets: passBuckets,
      registers,
    });
    this.probeSeconds = new Histogram({
      name: 'drover_probe_seconds',
      help: 'Duration of one instance probe, by outcome: ok (booted, and its runner listed), not_booted (the boot probe did not pass yet, as while it boots), error (a command failed or did not answer).',
      labelNames: ['outcome'],
      buckets: probeBuckets,
      registers,
    });
    this.shutdownSeconds = new Histogram({
      name: 'drover_shutdown_seconds',
      help: 'Time from an instance entering shutdown to the first listing without it.',
      buckets: shutdownBuckets,
      registers,
    });
    this.disappearances = new Counter({
      name: 'drover_instances_disappeared_total',
      help: 'Instances that vanished from the cloud without being shut down, by the lifecycle state they were in.',
      labelNames: ['state'],
      registers,
    });
    // Every series from the start, so a rate over them is 0 rather than absent.
    for (const outcome of probeOutcomes) this.probeSeconds.zero({ outcome });
    for (const state of vanishingStates) this.disappearances.inc({ state }, 0);
  }

  booted(seconds: number): void {
    this.bootSeconds.observe(seconds);
  }

  disappeared(state: Lifecycle): void {
    this.disappearances.inc({ state });
  }

  shutdownTook(seconds: number): void {
    this.shutdownSeconds.observe(seconds);
  }

  probed(seconds: number, outcome: ProbeOutcome): void {
    this.probeSeconds.observe({ outcome }, seconds);
  }

  containerStarted(waitSeconds: number): void {
    this.waitSeconds.observe(waitSeconds);
  }

  passTook(seconds: number): void {
    this.passSeconds.observe(seconds);
  }
}

/** What the scrape-time metrics read. */
export interface MetricSources {
  pool: Pool;
  queue: ContainerQueue & { health(): QueueHealth };
  /** The configured types: a queued container is counted under the type a create for it would ask for. */
  instanceTypes: Readonly<Record<string, InstanceType>>;
  /** `scheduler.maxConcurrentContainers`; null: no limit. */
  maxConcurrentContainers: number | null;
  /** For the age of the oldest queued container; the queue's submit times are on it. */
  clock: Clock;
}

export function registerDroverMetrics(registry: Registry, sources: MetricSources): void {
  const { pool, queue, instanceTypes, clock } = sources;
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
    help: 'Containers waiting or running, by queue state and instance type: the type a locked or running one is on; for a queued one, the cheapest type that fits it (what a create for it asks for, before any fallback; "none" if no type fits).',
    labelNames: ['state', 'instance_type'],
    registers: [registry],
    collect() {
      this.reset();
      // Every configured type in every state, so a series drops to 0 rather than vanishing.
      for (const state of activeStates) for (const instance_type of Object.keys(instanceTypes)) this.set({ state, instance_type }, 0);
      // Thousands queued share a handful of shapes: one choice per shape and scrape.
      const typeFor = new Map<string, string>();
      const cheapestFor = (constraints: Readonly<Constraints>): string => {
        const shape = shapeOf(constraints);
        let name = typeFor.get(shape);
        if (name === undefined) {
          const choice = chooseInstanceType(constraints, instanceTypes);
          name = choice.ok ? choice.instanceType.name : noFittingType;
          typeFor.set(shape, name);
        }
        return name;
      };
      // A lock records the type; a queued container has none (an unlock or requeue clears it).
      for (const container of queue.pending()) {
        this.inc({ state: container.state, instance_type: container.instanceType ?? cheapestFor(container.constraints) });
      }
    },
  });
  new Gauge({
    name: 'drover_longest_wait_seconds',
    help: 'Age of the oldest queued container (since its submit); 0 when none is queued.',
    registers: [registry],
    collect() {
      let oldest = Infinity;
      for (const container of queue.pending()) if (container.state === 'queued' && container.submittedAt < oldest) oldest = container.submittedAt;
      this.set(oldest === Infinity ? 0 : Math.max(0, clock.now() - oldest) / 1_000);
    },
  });
  new Gauge({
    name: 'drover_max_concurrent_containers',
    help: 'The configured limit on containers locked or running at once (scheduler.maxConcurrentContainers); -1: no limit.',
    registers: [registry],
  }).set(sources.maxConcurrentContainers ?? -1);
  new Counter({
    name: 'drover_boot_outcomes_total',
    help: 'Boots seen by this daemon, by outcome: booted (booting to idle or running), failed (shut down for not booting within timeoutBooting, or vanished while booting).',
    labelNames: ['outcome'],
    registers: [registry],
    collect() {
      // The pool keeps the counts; a counter rebuilt from them at each scrape still only rises.
      const { booted, failed } = pool.bootOutcomes();
      this.reset();
      this.inc({ outcome: 'booted' }, booted);
      this.inc({ outcome: 'failed' }, failed);
    },
  });
  new Gauge({
    name: 'drover_vcpus',
    help: 'vCPUs of the booted instances (idle or running), by whether containers hold them (in_use="true") or they are free.',
    labelNames: ['in_use'],
    registers: [registry],
    collect() {
      const { capacity, used } = pool.bootedResources();
      this.set({ in_use: 'true' }, used.vcpus);
      this.set({ in_use: 'false' }, capacity.vcpus - used.vcpus);
    },
  });
  new Gauge({
    name: 'drover_memory_bytes',
    help: 'RAM of the booted instances (idle or running), by whether containers hold it (in_use="true") or it is free.',
    labelNames: ['in_use'],
    registers: [registry],
    collect() {
      const { capacity, used } = pool.bootedResources();
      this.set({ in_use: 'true' }, used.ramMiB * mebibyte);
      this.set({ in_use: 'false' }, (capacity.ramMiB - used.ramMiB) * mebibyte);
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

function shapeOf(constraints: Readonly<Constraints>): string {
  return `${constraints.vcpus}/${constraints.ramMiB}/${constraints.scratchGiB}/${constraints.gpus}/${constraints.preemptible}`;
}
