// Turns what GCE says went wrong into Drover's error classes, from the three places it says it: a
// failed HTTP call (gaxios: the status, and the JSON body with its legacy `errors[].reason` and its
// `google.rpc.ErrorInfo` reasons), a google-gax error (an RPC code and a reason), and a zone
// operation that finished with `error.errors[].code`. One table decides the class.

import { CapacityError, CloudError, CredentialsError, QuotaError, RateLimitError } from '../errors.js';

/** The instance named in a call does not exist: a destroy counts it done. */
export class GceNotFoundError extends CloudError {}

/** A fingerprint was stale (412 conditionNotMet): someone changed the labels or metadata since they were read. */
export class GceFingerprintError extends CloudError {}

/** What the driver was doing, for the message and for the errors that name a zone or type. */
export interface GceCallContext {
  /** e.g. `create of n2-standard-8 in us-central1-a`, `list`, `destroy of us-central1-a/drover-…`. */
  what: string;
  project: string;
  zone?: string;
  /** Drover's instance type name, on creates. */
  instanceType?: string;
}

type Outcome = 'quota' | 'capacity' | 'rateLimit' | 'credentials' | 'notFound' | 'fingerprint';

interface Rule {
  outcome: Outcome;
  /** Operation error codes, legacy `errors[].reason`s, ErrorInfo reasons and RPC status names. */
  codes: readonly string[];
  httpStatuses: readonly number[];
}

// First match wins, and every row's codes are tried before any row's HTTP statuses: GCE answers
// quota and rate-limit refusals with 403 too, which alone would read as a permission problem.
export const gceErrorTable: readonly Rule[] = [
  { outcome: 'quota', codes: ['QUOTA_EXCEEDED', 'quotaExceeded', 'RESOURCE_QUOTA_EXCEEDED'], httpStatuses: [] },
  {
    outcome: 'capacity',
    codes: [
      'ZONE_RESOURCE_POOL_EXHAUSTED',
      'ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS',
      'REGION_RESOURCE_POOL_EXHAUSTED',
      'RESOURCE_POOL_EXHAUSTED',
      'insufficientCapacity',
    ],
    httpStatuses: [],
  },
  {
    outcome: 'rateLimit',
    codes: ['rateLimitExceeded', 'userRateLimitExceeded', 'RATE_LIMIT_EXCEEDED', 'CONCURRENT_OPERATIONS_QUOTA_EXCEEDED', 'RESOURCE_EXHAUSTED'],
    httpStatuses: [429],
  },
  { outcome: 'notFound', codes: ['notFound', 'RESOURCE_NOT_FOUND', 'NOT_FOUND'], httpStatuses: [404] },
  { outcome: 'fingerprint', codes: ['conditionNotMet', 'CONDITION_NOT_MET'], httpStatuses: [412] },
  {
    outcome: 'credentials',
    // invalid_grant and unauthorized_client come from Google's token endpoint, when a key is revoked or wrong.
    codes: ['forbidden', 'PERMISSION_DENIED', 'UNAUTHENTICATED', 'invalid_grant', 'unauthorized_client'],
    httpStatuses: [401, 403],
  },
];

/** What a GCE error says, wherever it came from. */
export interface GceFault {
  httpStatus: number | undefined;
  codes: string[];
  message: string;
}

// google-gax's RPC codes (google.rpc.Code) for the HTTP statuses the table reads.
const rpcCodeToHttpStatus: Readonly<Record<number, number>> = { 5: 404, 7: 403, 8: 429, 16: 401 };

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function strings(values: unknown[]): string[] {
  return values.filter((value): value is string => typeof value === 'string' && value !== '');
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Codes and message from a JSON error body: `{error: {code, message, status, errors: [{reason}], details: [{reason}]}}` or OAuth's `{error, error_description}`. */
function readBody(body: unknown): { codes: string[]; message: string | undefined } {
  if (!isRecord(body)) return { codes: [], message: undefined };
  const { error } = body;
  if (typeof error === 'string') {
    return { codes: [error], message: typeof body.error_description === 'string' ? body.error_description : error };
  }
  if (!isRecord(error)) return { codes: [], message: undefined };
  const list = (value: unknown): unknown[] => (Array.isArray(value) ? value : []);
  const codes = strings([
    ...list(error.errors).map((entry) => (isRecord(entry) ? entry.reason : undefined)),
    ...list(error.details).map((entry) => (isRecord(entry) ? entry.reason : undefined)),
    error.status,
  ]);
  return { codes, message: typeof error.message === 'string' ? error.message : undefined };
}

/** What a rejected client call says: a gaxios error (HTTP status, body as its message) or a google-gax one (RPC code, reason). */
export function faultOfCall(error: unknown): GceFault {
  if (!(error instanceof Error)) return { httpStatus: undefined, codes: [], message: String(error) };
  const fields = error as Error & { status?: unknown; code?: unknown; reason?: unknown; response?: { data?: unknown } };
  if (typeof fields.status === 'number') {
    // With a streamed response, gaxios puts the body text in the message and leaves data empty.
    const body = isRecord(fields.response?.data) ? fields.response.data : parseJson(error.message);
    const { codes, message } = readBody(body);
    return { httpStatus: fields.status, codes, message: message ?? error.message };
  }
  const httpStatus = typeof fields.code === 'number' ? rpcCodeToHttpStatus[fields.code] : undefined;
  // A string code is a system error (ECONNREFUSED, ENOTFOUND): kept for the message.
  const codes = strings([fields.reason, fields.code]);
  return { httpStatus, codes, message: error.message };
}

/** The operation's own error parts, as the Compute API returns them on a finished operation. */
export interface GceOperationError {
  error?: { errors?: { code?: string | null; message?: string | null }[] | null } | null;
  httpErrorStatusCode?: number | null;
}

/** What a finished operation says went wrong, or undefined when it succeeded. */
export function faultOfOperation(operation: GceOperationError): GceFault | undefined {
  const errors = operation.error?.errors ?? [];
  if (errors.length === 0) return undefined;
  return {
    httpStatus: operation.httpErrorStatusCode ?? undefined,
    codes: strings(errors.map((entry) => entry.code)),
    message: strings(errors.map((entry) => entry.message)).join('; ') || 'operation failed',
  };
}

function outcomeOf(fault: GceFault): Outcome | undefined {
  const byCode = gceErrorTable.find((rule) => fault.codes.some((code) => rule.codes.includes(code)));
  if (byCode) return byCode.outcome;
  return fault.httpStatus === undefined ? undefined : gceErrorTable.find((rule) => rule.httpStatuses.includes(fault.httpStatus as number))?.outcome;
}

export function toCloudError(fault: GceFault, context: GceCallContext, cause?: unknown): CloudError {
  const codes = [fault.httpStatus, ...fault.codes].filter((part) => part !== undefined).join(' ');
  const message = `GCE ${context.what}: ${fault.message}${codes ? ` (${codes})` : ''}`;
  const options = { cause };
  switch (outcomeOf(fault)) {
    case 'quota':
      return new QuotaError(message, options);
    case 'capacity':
      return new CapacityError(message, context.instanceType, { ...options, zone: context.zone });
    case 'rateLimit':
      return new RateLimitError(message, undefined, options);
    case 'notFound':
      return new GceNotFoundError(message, options);
    case 'fingerprint':
      return new GceFingerprintError(message, options);
    case 'credentials':
      return new CredentialsError(
        `${message}; the credentials Drover uses (GOOGLE_APPLICATION_CREDENTIALS, or the VM's service account) ` +
          `were refused or lack a role it needs in project ${context.project} (roles/compute.instanceAdmin.v1)`,
        options,
      );
    default:
      return new CloudError(message, options);
  }
}

/** A rejected client call as Drover's error. */
export function callError(error: unknown, context: GceCallContext): CloudError {
  return toCloudError(faultOfCall(error), context, error);
}

/** Missing application default credentials, said so that the operator knows what to set. */
export function missingCredentialsError(cause: unknown, project: string): CredentialsError {
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new CredentialsError(
    `GCE: no usable Google credentials for project ${project} (${reason}); set GOOGLE_APPLICATION_CREDENTIALS ` +
      'to a service account key file, run `gcloud auth application-default login`, or run Drover on a GCE VM with a service account',
    { cause },
  );
}
