// Coalesced change notifications: any number of changes in one turn of the event loop reach each
// subscriber as one call, and a subscriber reads whatever state it needs when called.

export type Unsubscribe = () => void;

export class Notifier {
  private readonly subscribers = new Set<() => void>();
  private pending = false;

  subscribe(subscriber: () => void): Unsubscribe {
    this.subscribers.add(subscriber);
    return () => {
      this.subscribers.delete(subscriber);
    };
  }

  notify(): void {
    if (this.pending || this.subscribers.size === 0) return;
    this.pending = true;
    // A microtask, not a timer: notifications must not wait on a clock that a test controls.
    queueMicrotask(() => {
      this.pending = false;
      for (const subscriber of [...this.subscribers]) subscriber();
    });
  }
}
