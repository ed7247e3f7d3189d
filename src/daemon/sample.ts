// The sample container `drover run --sample` dispatches, so a new user sees a real run at once.
import { finalStates, type Container, type ContainerQueue } from '../queue/types.js';

export const sampleCommand = ['sh', '-c', 'echo "hello from Drover: container $DROVER_SAMPLE ran in $(pwd) on $(uname -sr)"'];

/** Submits the sample and resolves with it once it has finished, however it finished. */
export function runSample(queue: ContainerQueue): Promise<Container> {
  const submitted = queue.submit({
    image: null,
    command: sampleCommand,
    env: { DROVER_SAMPLE: 'sample-1' },
    constraints: { vcpus: 1, ramMiB: 64, scratchGiB: 0, gpus: 0, preemptible: false },
    priority: 0,
  });
  return new Promise((resolve) => {
    const check = () => {
      const container = queue.get(submitted.uuid);
      if (container && finalStates.has(container.state)) {
        unsubscribe();
        resolve(container);
      }
    };
    const unsubscribe = queue.subscribe(check);
    check();
  });
}
