// Reads the output of the runner's `list` command: one line per container it knows,
// `<uuid> running` or `<uuid> exited <code>`.

export interface RunnerListing {
  running: string[];
  exited: Map<string, number>;
}

export class RunnerListError extends Error {}

export function parseRunnerList(stdout: string): RunnerListing {
  const running: string[] = [];
  const exited = new Map<string, number>();
  for (const [index, raw] of stdout.split('\n').entries()) {
    const line = raw.trim();
    if (line === '') continue;
    const fields = line.split(/\s+/);
    const [uuid, state, code] = fields;
    if (uuid && state === 'running' && fields.length === 2) {
      running.push(uuid);
    } else if (uuid && state === 'exited' && code !== undefined && /^-?\d+$/.test(code) && fields.length === 3) {
      exited.set(uuid, Number(code));
    } else {
      throw new RunnerListError(`runner list: line ${index + 1} is not "<uuid> running" or "<uuid> exited <code>": ${JSON.stringify(raw)}`);
    }
  }
  return { running, exited };
}
