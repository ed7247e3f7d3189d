// A CloudDriver decorator that counts every cloud call and its errors in Prometheus metrics.

import { Counter, type Registry } from 'prom-client';
import type { CloudDriver, CloudOperation } from './driver.js';
import { errorClass } from './errors.js';

type OperationLabel = 'operation' | 'error';
type ErrorLabel = 'operation' | 'class';

// Reuses a metric already on the registry, so wrapping a second driver (or a restart in tests)
// does not fail with a duplicate registration.
function counter<L extends string>(registry: Registry, name: string, help: string, labelNames: L[]): Counter<L> {
  const existing = registry.getSingleMetric(name);
  if (existing instanceof Counter) return existing as Counter<L>;
  if (existing) throw new Error(`metric ${name} is already registered and is not a counter`);
  return new Counter({ name, help, labelNames, registers: [registry] });
}

export function metered(driver: CloudDriver, registry: Registry): CloudDriver {
  const operations = counter<OperationLabel>(
    registry,
    'drover_cloud_operations_total',
    'Cloud API calls, by operation and whether they failed.',
    ['operation', 'error'],
  );
  const errors = counter<ErrorLabel>(
    registry,
    'drover_cloud_errors_total',
    'Failed cloud API calls, by operation and error class.',
    ['operation', 'class'],
  );

  async function count<T>(operation: CloudOperation, call: () => Promise<T>): Promise<T> {
    try {
      const result = await call();
      operations.inc({ operation, error: 'false' });
      return result;
    } catch (error) {
      operations.inc({ operation, error: 'true' });
      errors.inc({ operation, class: errorClass(error) });
      throw error;
    }
  }

  return {
    create: (request) => count('create', () => driver.create(request)),
    list: (tagFilter) => count('list', () => driver.list(tagFilter)),
    destroy: (id) => count('destroy', () => driver.destroy(id)),
    setTags: (id, tags) => count('setTags', () => driver.setTags(id, tags)),
  };
}
