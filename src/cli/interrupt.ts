// Ctrl-C while the CLI waits on a container: an AbortSignal instead of the process ending at once.

export interface Interrupt {
  signal: AbortSignal;
  /** Gives Ctrl-C back its default effect: ending the process. */
  stop(): void;
}

export function listenForInterrupt(): Interrupt {
  const controller = new AbortController();
  const onInterrupt = () => controller.abort();
  process.on('SIGINT', onInterrupt);
  return { signal: controller.signal, stop: () => process.off('SIGINT', onInterrupt) };
}
