// Reads a YAML config file into a Config, reporting every problem at once as `<key path>: <reason>`.

import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { LineCounter, parseDocument } from 'yaml';
import { z } from 'zod';
import { stateHome } from './home.js';
import { configSchema, describeConfigIssue, type Config } from './schema.js';

export interface ConfigIssue {
  /** Dotted key path such as `cloud.stub.seedInstances[0].instanceType`; empty for file-level problems. */
  path: string;
  message: string;
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';

  constructor(
    /** The file (or other label) the config came from. */
    readonly source: string,
    readonly issues: ConfigIssue[],
  ) {
    // One line per problem, each led by the source, so the lines read like compiler output and grep well.
    super(issues.map((issue) => `${source}: ${issue.path ? `${issue.path}: ` : ''}${issue.message}`).join('\n'));
  }
}

export interface ConfigOptions {
  /** The state directory relative state paths resolve against; default stateHome() (DROVER_HOME, else ~/.drover). */
  home?: string;
}

/**
 * Parses and validates `yamlText`; `source` names it in error messages. The state paths come back
 * absolute (see resolveStatePaths). Throws ConfigError.
 */
export function parseConfig(yamlText: string, source: string, options: ConfigOptions = {}): Config {
  const lineCounter = new LineCounter();
  const doc = parseDocument(yamlText, { lineCounter, prettyErrors: false });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      source,
      doc.errors.map((error) => {
        const { line, col } = lineCounter.linePos(error.pos[0]);
        return { path: '', message: `YAML syntax error at line ${line}, column ${col}: ${error.message}` };
      }),
    );
  }
  // An empty file reads as null; treating it as {} lets the schema name each required key.
  const data: unknown = doc.toJS() ?? {};
  const result = configSchema.safeParse(data, { error: describeConfigIssue });
  if (!result.success) {
    throw new ConfigError(source, result.error.issues.flatMap(toConfigIssues));
  }
  return resolveStatePaths(result.data, options.home ?? stateHome());
}

/**
 * The daemon's state paths, made absolute: a relative queue.path, http.tokenFile,
 * cloud.loopback.directory, ssh.privateKeyFile or ssh.hostKeysFile is relative to the state directory `home`, never to the working
 * directory or the config file's, so one config means the same state wherever it is run from.
 * pool.runnerCommand is a path on the instance and stays as written.
 */
function resolveStatePaths(config: Config, home: string): Config {
  return {
    ...config,
    queue: { ...config.queue, path: resolve(home, config.queue.path) },
    http: { ...config.http, tokenFile: resolve(home, config.http.tokenFile) },
    cloud: { ...config.cloud, loopback: { ...config.cloud.loopback, directory: resolve(home, config.cloud.loopback.directory) } },
    ssh: {
      ...config.ssh,
      privateKeyFile: config.ssh.privateKeyFile === null ? null : resolve(home, config.ssh.privateKeyFile),
      hostKeysFile: config.ssh.hostKeysFile === null ? null : resolve(home, config.ssh.hostKeysFile),
    },
  };
}

/** Reads and parses the config file at `path`. Throws ConfigError, also when the file cannot be read. */
export function loadConfig(path: string, options: ConfigOptions = {}): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const message =
      code === 'ENOENT'
        ? 'file does not exist'
        : code === 'EISDIR'
          ? 'is a directory, not a config file'
          : `cannot read file: ${(err as Error).message}`;
    throw new ConfigError(path, [{ path: '', message }]);
  }
  return parseConfig(text, path, options);
}

function toConfigIssues(issue: z.core.$ZodIssue): ConfigIssue[] {
  // zod reports all unknown keys of one object as one issue; operators fix them one key at a time.
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => ({ path: formatPath([...issue.path, key]), message: 'unknown key' }));
  }
  return [{ path: formatPath(issue.path), message: issue.message }];
}

function formatPath(path: readonly PropertyKey[]): string {
  if (path.length === 0) return '(top level)';
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else if (typeof key === 'string' && /^[A-Za-z_][\w-]*$/.test(key)) out += out ? `.${key}` : key;
    // Instance type names such as "m5.large" are keys too; brackets keep the path unambiguous.
    else out += `[${JSON.stringify(String(key))}]`;
  }
  return out;
}
