// What every cloud driver must do for the pool, as one suite each driver's test runs against its
// own target: create, list by tag, tags (the instance secret too) read back from the provider as
// written, one instance per create token, setTags merging, destroy that can be repeated, and the
// provider's quota, capacity and rate-limit refusals arriving as Drover's classes.
import { randomBytes, randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tagKeys, type CloudDriver, type CloudInstance, type InstanceType, type Tags } from '../../src/cloud/driver.js';
import { CapacityError, QuotaError, RateLimitError } from '../../src/cloud/errors.js';

export type RefusalKind = 'quota' | 'capacity' | 'rateLimit';

export interface ConformanceTarget {
  driver: CloudDriver;
  /** A type the driver can create. */
  instanceType: InstanceType;
  /**
   * Makes creates fail as the provider itself refuses them for `kind` (its own error codes, not
   * Drover's classes) until the returned function undoes it.
   */
  refuseCreates(kind: RefusalKind): Promise<() => void>;
  /** Stops whatever the target started (servers, sandboxes). */
  close(): Promise<void>;
}

const refusalClass = { quota: QuotaError, capacity: CapacityError, rateLimit: RateLimitError } as const;

/** Tag values a driver must carry unchanged, whatever its provider allows in tags or labels. */
const awkwardValue = 'Mixed Case: a/b=c, ü & 😀 — plus a long tail '.padEnd(120, 'x');

export interface ConformanceOptions {
  /**
   * The kinds the target can be made to produce; a driver whose provider has none (loopback: this
   * machine has no quota or API limit) passes none, and its test file says why.
   */
  refusals: readonly RefusalKind[];
  /**
   * Whether a second create with the same create token returns the first one's instance rather
   * than make another. A driver that does not offer it says why in its test file.
   */
  idempotentCreates: boolean;
}

export function describeDriverConformance(name: string, options: ConformanceOptions, makeTarget: () => Promise<ConformanceTarget>): void {
  const { refusals, idempotentCreates } = options;
  describe(`${name} driver conformance`, () => {
    let target: ConformanceTarget;
    const pool = `conformance-${randomUUID().slice(0, 8)}`;

    beforeEach(async () => {
      target = await makeTarget();
    });
    afterEach(async () => {
      await target.close();
    });

    const tagsFor = (poolName: string, extra: Tags = {}): Tags => ({
      [tagKeys.pool]: poolName,
      [tagKeys.instanceType]: target.instanceType.name,
      [tagKeys.createToken]: randomUUID(),
      [tagKeys.secret]: randomBytes(32).toString('hex'),
      ...extra,
    });
    const create = (tags: Tags) => target.driver.create({ instanceType: target.instanceType, tags });
    const listed = async (poolName: string, id: string): Promise<CloudInstance | undefined> =>
      (await target.driver.list({ [tagKeys.pool]: poolName })).find((instance) => instance.id === id);

    it('creates an instance of the provider type, carrying the tags it was given', async () => {
      const tags = tagsFor(pool, { [tagKeys.idleBehavior]: 'run' });
      const instance = await create(tags);
      expect(instance.id).not.toBe('');
      expect(instance.providerType).toBe(target.instanceType.providerType);
      // What the provider stored, not the create's answer: a driver may fill that in from the request.
      const stored = await listed(pool, instance.id);
      expect(stored?.providerType).toBe(target.instanceType.providerType);
      expect(stored?.tags).toMatchObject(tags);
    });

    it('lists the instance secret tag unchanged', async () => {
      const tags = tagsFor(pool);
      const instance = await create(tags);
      expect((await listed(pool, instance.id))?.tags[tagKeys.secret]).toBe(tags[tagKeys.secret]);
    });

    if (idempotentCreates) it('makes one instance of two creates with the same create token', async () => {
      const tags = tagsFor(pool);
      const first = await create(tags);
      const second = await create(tags);
      expect(second.id).toBe(first.id);
      const byToken = await target.driver.list({ [tagKeys.pool]: pool, [tagKeys.createToken]: tags[tagKeys.createToken] ?? '' });
      expect(byToken.map((instance) => instance.id)).toEqual([first.id]);
    });

    it('lists by tag: only the instances carrying every tag of the filter', async () => {
      const mine = await create(tagsFor(pool));
      const other = await create(tagsFor(`${pool}-other`));
      const ids = (await target.driver.list({ [tagKeys.pool]: pool })).map((instance) => instance.id);
      expect(ids).toContain(mine.id);
      expect(ids).not.toContain(other.id);
      const both = await target.driver.list({ [tagKeys.pool]: pool, [tagKeys.createToken]: mine.tags[tagKeys.createToken] ?? '' });
      expect(both.map((instance) => instance.id)).toEqual([mine.id]);
    });

    it('reads tags back exactly as written, whatever characters they hold', async () => {
      const tags = tagsFor(pool, { 'drover-note': awkwardValue });
      const instance = await create(tags);
      expect((await listed(pool, instance.id))?.tags).toMatchObject(tags);
    });

    it('setTags merges: the new value is listed and the other tags stay', async () => {
      const tags = tagsFor(pool, { [tagKeys.idleBehavior]: 'run' });
      const instance = await create(tags);
      await target.driver.setTags(instance.id, { [tagKeys.idleBehavior]: 'hold' });
      expect((await listed(pool, instance.id))?.tags).toMatchObject({ ...tags, [tagKeys.idleBehavior]: 'hold' });
    });

    it('destroys: the instance leaves the listing, and destroying it again succeeds', async () => {
      const instance = await create(tagsFor(pool));
      await target.driver.destroy(instance.id);
      expect(await listed(pool, instance.id)).toBeUndefined();
      await expect(target.driver.destroy(instance.id)).resolves.toBeUndefined();
    });

    for (const kind of refusals) {
      it(`a ${kind} refusal of a create arrives as ${refusalClass[kind].name}, and creates work again after it`, async () => {
        const undo = await target.refuseCreates(kind);
        try {
          const error = await create(tagsFor(pool)).then(
            () => undefined,
            (err: unknown) => err,
          );
          expect(error).toBeInstanceOf(refusalClass[kind]);
          if (kind === 'capacity') expect((error as CapacityError).instanceType).toBe(target.instanceType.name);
        } finally {
          undo();
        }
        expect(await listed(pool, (await create(tagsFor(pool))).id)).toBeDefined();
      });
    }
  });
}
