// Turns a failed cloud call into what the pool does about it: a quota error closes creates for
// quotaErrorTTL, a rate-limit error throttles that kind of call, a capacity error closes creates
// of the type (or of every type, when zone-wide) for the same TTL.
import { CapacityError, QuotaError, RateLimitError } from '../cloud/errors.js';

export type FailureResponse =
  | { kind: 'quota' }
  | { kind: 'rateLimit'; delayMs: number }
  /** `instanceType` null: every type; `zone` null: the error named none (wherever the create was tried). */
  | { kind: 'capacity'; instanceType: string | null; zone: string | null }
  | { kind: 'other' };

/** Wait after a rate-limit error that named no retry time. */
export const defaultRateLimitBackoffMs = 10_000;

export function responseTo(error: unknown, now: number, backoffMs = defaultRateLimitBackoffMs): FailureResponse {
  if (error instanceof QuotaError) return { kind: 'quota' };
  if (error instanceof RateLimitError) {
    const delayMs = error.retryAt === undefined ? backoffMs : Math.max(1, error.retryAt - now);
    return { kind: 'rateLimit', delayMs };
  }
  if (error instanceof CapacityError) return { kind: 'capacity', instanceType: error.instanceType ?? null, zone: error.zone ?? null };
  return { kind: 'other' };
}
