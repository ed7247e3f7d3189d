// The one place where AWS error codes are read: EC2 answers with code strings, not classes, so
// they are mapped here, in one table, into Drover's error classes. Everything past this file
// matches by class.

import { CapacityError, CloudError, CredentialsError, QuotaError, RateLimitError } from '../errors.js';

type Ec2ErrorClass = 'quota' | 'capacity' | 'zoneCapacity' | 'rateLimit' | 'credentials' | 'notFound';

/**
 * EC2 does not know the instance id. Not proof that the instance is gone: EC2 is eventually
 * consistent, and a call just after RunInstances may not see the new instance yet.
 */
export class Ec2NotFoundError extends CloudError {}

/**
 * EC2 error codes (and the SDK's own error names) by the Drover class they become. Codes not
 * listed become a plain CloudError with the code in its message.
 * https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html
 */
export const ec2ErrorClasses: Readonly<Record<string, Ec2ErrorClass>> = {
  // The account's limits: no create succeeds until instances go or the limit is raised.
  InstanceLimitExceeded: 'quota',
  VcpuLimitExceeded: 'quota',
  MaxSpotInstanceCountExceeded: 'quota',
  VolumeLimitExceeded: 'quota',
  // No room for this instance type where it was tried; other types (or later) may work.
  InsufficientInstanceCapacity: 'capacity',
  InsufficientCapacity: 'capacity',
  InsufficientHostCapacity: 'capacity',
  InsufficientReservedInstanceCapacity: 'capacity',
  UnfulfillableCapacity: 'capacity',
  // Spot price above what was offered: the type cannot be had there now, as with no capacity.
  SpotMaxPriceTooLow: 'capacity',
  // Sent when the type is not offered in the subnet's availability zone.
  Unsupported: 'capacity',
  // The subnet has no free IP addresses: no type fits there.
  InsufficientFreeAddressesInSubnet: 'zoneCapacity',
  RequestLimitExceeded: 'rateLimit',
  Throttling: 'rateLimit',
  ThrottlingException: 'rateLimit',
  AuthFailure: 'credentials',
  UnauthorizedOperation: 'credentials',
  OptInRequired: 'credentials',
  Blocked: 'credentials',
  // The SDK's default credential chain found nothing (no env, profile, SSO, or instance role).
  CredentialsProviderError: 'credentials',
  'InvalidInstanceID.NotFound': 'notFound',
};

/** The IAM action behind each EC2 call the driver makes, for messages about missing permissions. */
export type Ec2Action = 'RunInstances' | 'DescribeInstances' | 'TerminateInstances' | 'CreateTags';

/** What the call was, for the error's message and, for creates, its CapacityError. */
export interface Ec2CallContext {
  action: Ec2Action;
  /** Drover's instance type name, for RunInstances. */
  instanceType?: string;
  providerType?: string;
  subnetId?: string;
  /** The zone a launch config named, for RunInstances: its capacity errors carry it. */
  zone?: string;
  instanceId?: string;
}

/** The EC2 error code of `error` (an SDK service exception's name), or undefined for anything else. */
function ec2ErrorCode(error: unknown): string | undefined {
  if (!(error instanceof Error)) return undefined;
  const { Code } = error as { Code?: unknown };
  if (typeof Code === 'string' && Code !== '') return Code;
  return error.name !== 'Error' ? error.name : undefined;
}

function describe(context: Ec2CallContext): string {
  const about = context.instanceId ?? (context.providerType ? `${context.providerType} (instance type ${context.instanceType ?? '?'})` : undefined);
  const place = context.subnetId ?? context.zone;
  const where = place ? ` in ${place}` : '';
  return `ec2 ${context.action}${about ? ` ${about}` : ''}${where}`;
}

/** `error` from an EC2 call as one of Drover's cloud error classes; the original is kept as `cause`. */
export function toCloudError(error: unknown, context: Ec2CallContext): CloudError {
  if (error instanceof CloudError) return error;
  const code = ec2ErrorCode(error);
  const detail = error instanceof Error ? error.message : String(error);
  const what = describe(context);
  const options = { cause: error };
  const capacityOptions = { ...options, ...(context.zone !== undefined && { zone: context.zone }) };
  switch (code === undefined ? undefined : ec2ErrorClasses[code]) {
    case 'quota':
      return new QuotaError(`${what}: account limit reached (${code}): ${detail}`, options);
    case 'capacity':
      return new CapacityError(`${what}: no capacity (${code}): ${detail}`, context.instanceType, capacityOptions);
    case 'zoneCapacity':
      return new CapacityError(`${what}: no capacity for any type (${code}): ${detail}`, undefined, capacityOptions);
    case 'rateLimit':
      // EC2 gives no retry time; the pool backs off by its own rule.
      return new RateLimitError(`${what}: EC2 API rate limit (${code}): ${detail}`, undefined, options);
    case 'credentials':
      return new CredentialsError(`${what}: ${credentialsAdvice(code ?? '', context.action)} (${code}): ${detail}`, options);
    case 'notFound':
      return new Ec2NotFoundError(`${what}: no such instance, or not visible yet (${code}): ${detail}`, options);
    default:
      return new CloudError(`${what}: ${code ?? 'error'}: ${detail}`, options);
  }
}

function credentialsAdvice(code: string, action: Ec2Action): string {
  switch (code) {
    case 'CredentialsProviderError':
      return 'no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run on an instance or task with an IAM role';
    case 'UnauthorizedOperation':
      return `the credentials lack permission for ec2:${action}${action === 'RunInstances' ? " (or iam:PassRole on the instance profile's role)" : ''}`;
    case 'AuthFailure':
      return 'AWS refused the credentials: check the access key, its secret and session token, and the clock';
    default:
      return 'the account cannot use EC2 in this region until the operator fixes it';
  }
}
