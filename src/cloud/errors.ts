// Typed cloud errors. The pool decides what to do from the class (`kind`), never from message text.

export type CloudErrorKind = 'quota' | 'rateLimit' | 'capacity' | 'other';

export class CloudError extends Error {
  readonly kind: CloudErrorKind = 'other';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The account or project has no room for another instance. */
export class QuotaError extends CloudError {
  override readonly kind = 'quota' as const;
}

/** The provider refused the call because of its API rate limit. */
export class RateLimitError extends CloudError {
  override readonly kind = 'rateLimit' as const;
  /** Earliest time (clock ms) the provider said a retry may succeed, when it said. */
  readonly retryAt: number | undefined;
  constructor(message: string, retryAt?: number, options?: { cause?: unknown }) {
    super(message, options);
    this.retryAt = retryAt;
  }
}

/** The provider has no capacity for this instance type (or, without a type, in this zone). */
export class CapacityError extends CloudError {
  override readonly kind = 'capacity' as const;
  /** The instance type name that is out of capacity; undefined means every type (zone-wide). */
  readonly instanceType: string | undefined;
  /** The zone that is out, when the provider said; undefined means wherever the create was tried. */
  readonly zone: string | undefined;
  constructor(message: string, instanceType?: string, options?: { cause?: unknown; zone?: string }) {
    super(message, options);
    this.instanceType = instanceType;
    this.zone = options?.zone;
  }
}

/** The driver's credentials are missing or refused: nothing will work until the operator fixes them. */
export class CredentialsError extends CloudError {}

/** The class name logged and counted for an error, e.g. QuotaError, or Error for anything else. */
export function errorClass(error: unknown): string {
  return error instanceof Error ? error.name : typeof error;
}
