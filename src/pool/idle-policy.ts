// How long an idle instance waits for work before it is shut down (`pool.idlePolicy`).
//
// `fixed`: `pool.timeoutIdle` for every instance.
//
// `adaptive` (the config's default): ski rental, learned. Keeping an instance idle for t costs t × price; shutting it and
// then needing it costs a cold start: its boot, paid for, plus a container waiting that boot
// (valued here at the instance's price too, so a cold start costs 2 × boot × price). Which is
// cheaper depends on the gap until the next work it would have taken, which nobody knows in
// advance; the policy learns its distribution from what happened to earlier idle instances of the
// same type and picks the timeout with the least expected cost over those gaps. Gaps are learned
// separately by how many instances of the type were already idle when one went idle (its rank,
// bucketed 0, 1, 2–3, 4–7, ...): the first few idle instances of a type are usually taken again
// soon, the hundredth after a burst usually never. So the policy also decides how many to keep
// warm: the ranks whose gaps make shutting at once the cheapest are let go at once.
// The docs (docs/idle-policy.md) give the rule and its replays.

export type IdlePolicyName = (typeof idlePolicyNames)[number];
export const idlePolicyNames = ['fixed', 'adaptive'] as const;
/** The config's default and the pool's (it won the replays: docs/idle-policy.md). */
export const defaultIdlePolicy: IdlePolicyName = 'adaptive';

export type IdleEnd = 'reused' | 'gone' | 'withdrawn';

export interface IdlePolicy {
  /** Ms an instance of the type waits for work, going idle with `rank` others of its type already idle. */
  timeoutFor(instanceType: string, rank: number): number;
  /** The instance went idle with `rank` others of its type idle. */
  wentIdle(workerId: string, instanceType: string, rank: number, at: number): void;
  /**
   * Its wait for work ended: work came (`reused`), it was shut down or disappeared (`gone`), or the
   * operator held or drained it (`withdrawn`: no gap learned).
   */
  leftIdle(workerId: string, at: number, outcome: IdleEnd): void;
  /** A create of the type: work that found no idle instance of it. */
  created(instanceType: string, at: number): void;
  /** An instance of the type this pool created booted, `bootMs` after its create. */
  booted(instanceType: string, bootMs: number): void;
}

export class FixedIdlePolicy implements IdlePolicy {
  constructor(private readonly timeoutIdleMs: number) {}

  timeoutFor(): number {
    return this.timeoutIdleMs;
  }

  wentIdle(): void {}

  leftIdle(): void {}

  created(): void {}

  booted(): void {}
}

/** The idle timeouts the adaptive policy chooses between. The last is also the learning horizon. */
export const candidateTimeoutsMs: readonly number[] = [10, 30, 60, 120, 180, 300, 600, 900, 1_200, 1_800].map((s) => s * 1000);
const horizonMs = candidateTimeoutsMs[candidateTimeoutsMs.length - 1]!;
/** Gaps remembered per type and rank bucket: the newest, so the policy follows the workload. */
const samplesKept = 200;
/** Below this many gaps in a bucket, its instances keep the fixed timeoutIdle. */
export const minSamples = 20;
/** A container waiting for a boot, per second, against a second of the instance's price. */
const waitWeight = 1;
/** Weight of the newest boot in the boot-time estimate. */
const bootSmoothing = 0.2;

/** 0, 1, 2–3, 4–7, 8–15, ... */
export function rankBucket(rank: number): number {
  return rank <= 0 ? 0 : Math.floor(Math.log2(rank)) + 1;
}

interface IdlePeriod {
  instanceType: string;
  bucket: number;
  startedAt: number;
}

/** An idle instance shut down: its gap is the time to the next create of its type that claims it. */
interface Unclaimed extends IdlePeriod {
  rank: number;
}

class Gaps {
  private readonly gaps: number[] = [];
  private next = 0;
  private cached: { bootMs: number; timeoutMs: number } | null = null;

  get size(): number {
    return this.gaps.length;
  }

  add(gapMs: number): void {
    if (this.gaps.length < samplesKept) this.gaps.push(gapMs);
    else this.gaps[this.next] = gapMs;
    this.next = (this.next + 1) % samplesKept;
    this.cached = null;
  }

  /** The candidate timeout with the least total cost over these gaps (in price-ms), the shorter on a tie. */
  bestTimeout(bootMs: number): number {
    if (this.cached?.bootMs === bootMs) return this.cached.timeoutMs;
    const coldStart = (1 + waitWeight) * bootMs;
    let best = candidateTimeoutsMs[0]!;
    let bestCost = Infinity;
    for (const timeout of candidateTimeoutsMs) {
      let cost = 0;
      for (const gap of this.gaps) cost += gap <= timeout ? gap : timeout + coldStart;
      if (cost < bestCost) {
        bestCost = cost;
        best = timeout;
      }
    }
    this.cached = { bootMs, timeoutMs: best };
    return best;
  }
}

interface TypeState {
  /** Smoothed create-to-booted time; null until one is seen. */
  bootMs: number | null;
  buckets: Map<number, Gaps>;
  unclaimed: Unclaimed[];
}

export class AdaptiveIdlePolicy implements IdlePolicy {
  private readonly types = new Map<string, TypeState>();
  private readonly open = new Map<string, IdlePeriod & { rank: number }>();

  constructor(private readonly fallbackMs: number) {}

  timeoutFor(instanceType: string, rank: number): number {
    const state = this.types.get(instanceType);
    const gaps = state?.buckets.get(rankBucket(rank));
    if (!state || state.bootMs === null || !gaps || gaps.size < minSamples) return this.fallbackMs;
    return gaps.bestTimeout(state.bootMs);
  }

  wentIdle(workerId: string, instanceType: string, rank: number, at: number): void {
    this.open.set(workerId, { instanceType, rank, bucket: rankBucket(rank), startedAt: at });
  }

  leftIdle(workerId: string, at: number, outcome: IdleEnd): void {
    const period = this.open.get(workerId);
    if (!period) return;
    this.open.delete(workerId);
    if (outcome === 'withdrawn') return;
    const state = this.stateOf(period.instanceType);
    if (outcome === 'reused') this.gapsOf(state, period.bucket).add(at - period.startedAt);
    else {
      this.expire(state, at);
      state.unclaimed.push(period);
    }
  }

  created(instanceType: string, at: number): void {
    const state = this.stateOf(instanceType);
    this.expire(state, at);
    // The create would have taken the lowest-ranked instance shut down before it (the newest of
    // those on a tie): the one a policy keeping fewer warm would have kept.
    let claimed = -1;
    for (let i = 0; i < state.unclaimed.length; i++) {
      const candidate = state.unclaimed[i]!;
      const best = state.unclaimed[claimed];
      if (!best || candidate.rank < best.rank || (candidate.rank === best.rank && candidate.startedAt > best.startedAt)) claimed = i;
    }
    if (claimed < 0) return;
    const [period] = state.unclaimed.splice(claimed, 1);
    this.gapsOf(state, period!.bucket).add(at - period!.startedAt);
  }

  booted(instanceType: string, bootMs: number): void {
    const state = this.stateOf(instanceType);
    state.bootMs = state.bootMs === null ? bootMs : state.bootMs + bootSmoothing * (bootMs - state.bootMs);
  }

  /** Shut-down instances no create claimed within the horizon: they would have waited in vain. */
  private expire(state: TypeState, now: number): void {
    if (state.unclaimed.length === 0) return;
    const kept: Unclaimed[] = [];
    for (const period of state.unclaimed) {
      if (now - period.startedAt > horizonMs) this.gapsOf(state, period.bucket).add(Infinity);
      else kept.push(period);
    }
    state.unclaimed = kept;
  }

  private stateOf(instanceType: string): TypeState {
    let state = this.types.get(instanceType);
    if (!state) {
      state = { bootMs: null, buckets: new Map(), unclaimed: [] };
      this.types.set(instanceType, state);
    }
    return state;
  }

  private gapsOf(state: TypeState, bucket: number): Gaps {
    let gaps = state.buckets.get(bucket);
    if (!gaps) {
      gaps = new Gaps();
      state.buckets.set(bucket, gaps);
    }
    return gaps;
  }
}

export function idlePolicyOf(name: IdlePolicyName, timeoutIdleMs: number): IdlePolicy {
  return name === 'adaptive' ? new AdaptiveIdlePolicy(timeoutIdleMs) : new FixedIdlePolicy(timeoutIdleMs);
}
