// The `inspect` settings: where the daemon streams its actors, and which of them. Every instance
// at once is tens of MB a minute (1,000 workers sent 62 MB), so by default only the pool's own
// machines, the scheduler and the container attempts go, and instances are asked for one by one.

/** Where `drover inspect-relay` listens unless told otherwise, and where `drover run --inspect` connects. */
export const defaultRelayPort = 8427;
export const defaultRelayUrl = `ws://127.0.0.1:${defaultRelayPort}`;

export const defaultActorSelectors: readonly string[] = ['pool'];

export const inspectorUrlHint = `expected a ws:// or wss:// URL such as ${defaultRelayUrl}`;

/** A URL the daemon can stream to: ws:// or wss://. */
export function isInspectorUrl(text: string): boolean {
  try {
    const { protocol } = new URL(text);
    return protocol === 'ws:' || protocol === 'wss:';
  } catch {
    return false;
  }
}

export const actorSelectorHint = 'expected pool, all or instance:<worker id or cloud instance id>';

/** `pool`, `all`, or `instance:<id>` naming a worker (`create-<token>` until its create returns) or a cloud instance id. */
export function isActorSelector(text: string): boolean {
  return text === 'pool' || text === 'all' || /^instance:\S+$/.test(text);
}

export interface ActorSelection {
  /** Every actor, every instance included. */
  all: boolean;
  /** The pool machine, its launch-config and capacity-scope machines, the scheduler and the container attempts. */
  pool: boolean;
  /** Instances asked for by worker id or cloud instance id. */
  instances: ReadonlySet<string>;
}

export function actorSelection(selectors: readonly string[]): ActorSelection {
  const instances = new Set<string>();
  for (const selector of selectors) {
    if (selector.startsWith('instance:')) instances.add(selector.slice('instance:'.length));
  }
  return { all: selectors.includes('all'), pool: selectors.includes('pool'), instances };
}
