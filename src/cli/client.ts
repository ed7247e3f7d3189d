// A typed client for the daemon's HTTP API, and how the CLI finds the daemon's URL and token.
import { readFileSync } from 'node:fs';
import { isAbsolute, relative } from 'node:path';
import type { IdleBehavior } from '../../machines/instance.js';
import { defaultConfigPath, stateHome } from '../config/home.js';
import { loadConfig } from '../config/load.js';
import type { Config, HttpSettings } from '../config/schema.js';
import { daemonUrlFile, readDaemonUrl } from '../daemon/url-file.js';
import {
  attemptHeader,
  outputBytesHeader,
  type InstanceEntry,
  type InstancesResponse,
  type LaunchConfigsResponse,
  type PoolResumeResponse,
  type SubmitRequest,
} from '../http/server.js';
import type { LaunchConfigAction, LaunchConfigView } from '../pool/launch-config-view.js';
import type { InstanceView } from '../pool/pool.js';
import type { Container, ContainerState } from '../queue/types.js';

export type { SubmitRequest };

/** A piece of a container's output: `text` from a given byte on, the output's size in bytes so far, and the attempt it is of. */
export interface OutputSince {
  text: string;
  totalBytes: number;
  /** The container's `attempts` when the output was read: each attempt's output starts afresh. */
  attempt: number;
}

/** The daemon answered with a non-2xx status; `message` is its `error` text. */
export class ApiError extends Error {
  override readonly name = 'ApiError';

  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** The daemon could not be reached at all (not running, wrong URL). */
export class ApiUnreachableError extends Error {
  override readonly name = 'ApiUnreachableError';
}

/** The CLI cannot tell where the daemon is or which token to use. */
export class ClientSettingsError extends Error {
  override readonly name = 'ClientSettingsError';
}

/**
 * Where a daemon on `http.port: 0` writes the URL it listens on (src/daemon/url-file.ts). It is
 * read for every request: a restarted daemon listens on another port.
 */
export interface DaemonUrlFile {
  file: string;
  /** Why the daemon cannot be reached when the file is missing, and what to do about it. */
  whenMissing: string;
}

export interface ApiClientOptions {
  /** The daemon's URL, or the file to read it from. */
  url: string | DaemonUrlFile;
  token: string;
  /** Where the token came from, for the message when the daemon refuses it (401); resolveClientSettings fills it. */
  tokenSource?: string;
}

/** The token's origin when the client was given no `tokenSource`. */
const defaultTokenSource = 'DROVER_TOKEN or http.tokenFile';

export class ApiClient {
  private readonly location: string | DaemonUrlFile;
  /** The URL of the last request, for the messages; undefined until a URL file has been read. */
  private lastUrl: string | undefined;
  private readonly token: string;
  private readonly tokenSource: string;

  constructor(options: ApiClientOptions) {
    this.location = typeof options.url === 'string' ? withoutTrailingSlash(options.url) : options.url;
    this.lastUrl = typeof this.location === 'string' ? this.location : undefined;
    this.token = options.token;
    this.tokenSource = options.tokenSource ?? defaultTokenSource;
  }

  /** The daemon's URL as messages name it: the one last asked. */
  get url(): string {
    return this.lastUrl ?? `the URL in ${(this.location as DaemonUrlFile).file}`;
  }

  submit(spec: SubmitRequest, signal?: AbortSignal): Promise<Container> {
    return this.json<Container>('POST', '/containers', { body: spec, signal });
  }

  async list(filter: { state?: ContainerState; limit?: number } = {}, signal?: AbortSignal): Promise<Container[]> {
    const query = new URLSearchParams();
    if (filter.state !== undefined) query.set('state', filter.state);
    if (filter.limit !== undefined) query.set('limit', String(filter.limit));
    const suffix = query.size > 0 ? `?${query.toString()}` : '';
    return (await this.json<{ containers: Container[] }>('GET', `/containers${suffix}`, { signal })).containers;
  }

  get(uuid: string, signal?: AbortSignal): Promise<Container> {
    return this.json<Container>('GET', `/containers/${encodeURIComponent(uuid)}`, { signal });
  }

  cancel(uuid: string, signal?: AbortSignal): Promise<Container> {
    return this.json<Container>('POST', `/containers/${encodeURIComponent(uuid)}/cancel`, { signal });
  }

  async logs(uuid: string, signal?: AbortSignal): Promise<string> {
    return (await this.request('GET', `/containers/${encodeURIComponent(uuid)}/logs`, { signal })).text();
  }

  /**
   * The container's output from byte `since` on (after a line saying so when the daemon no longer
   * holds some of it), and how many bytes of output there are in all: the `since` of the next call.
   */
  async logsSince(uuid: string, since: number, signal?: AbortSignal): Promise<OutputSince> {
    const response = await this.request('GET', `/containers/${encodeURIComponent(uuid)}/logs?since=${since}`, { signal });
    const count = (header: string): number => {
      const value = Number(response.headers.get(header) ?? Number.NaN);
      if (Number.isSafeInteger(value) && value >= 0) return value;
      throw new ApiError(response.status, `the daemon at ${this.url} sent no ${header} header; it is older than this drover, upgrade it to follow output`);
    };
    return { totalBytes: count(outputBytesHeader), attempt: count(attemptHeader), text: await response.text() };
  }

  /** The pool's instances, then its orphans; a daemon older than orphan listing sends no `orphan` field. */
  async instances(signal?: AbortSignal): Promise<InstanceEntry[]> {
    return (await this.json<InstancesResponse>('GET', '/instances', { signal })).instances;
  }

  setIdleBehavior(id: string, behavior: IdleBehavior, signal?: AbortSignal): Promise<InstanceView> {
    return this.json<InstanceView>('POST', `/instances/${encodeURIComponent(id)}/idle-behavior`, { body: { behavior }, signal });
  }

  kill(id: string, signal?: AbortSignal): Promise<InstanceView> {
    return this.json<InstanceView>('POST', `/instances/${encodeURIComponent(id)}/kill`, { signal });
  }

  /** Every launch config the pool knows, and why every create is frozen (null if not). */
  launchConfigs(signal?: AbortSignal): Promise<LaunchConfigsResponse> {
    return this.json<LaunchConfigsResponse>('GET', '/launch-configs', { signal });
  }

  /** Pauses, resumes or archives a launch config; the config as it is after. */
  changeLaunchConfig(id: string, action: LaunchConfigAction, signal?: AbortSignal): Promise<LaunchConfigView> {
    return this.json<LaunchConfigView>('POST', `/launch-configs/${encodeURIComponent(id)}/${action}`, { signal });
  }

  /** Lifts the pool's freeze of every create; false if creates were not frozen. */
  async resumeCreates(signal?: AbortSignal): Promise<boolean> {
    return (await this.json<PoolResumeResponse>('POST', '/pool/resume', { signal })).resumed;
  }

  health(signal?: AbortSignal): Promise<{ ok: boolean }> {
    return this.json<{ ok: boolean }>('GET', '/healthz', { signal });
  }

  async metrics(signal?: AbortSignal): Promise<string> {
    return (await this.request('GET', '/metrics', { signal })).text();
  }

  private async json<T>(method: string, path: string, options: { body?: unknown; signal?: AbortSignal | undefined }): Promise<T> {
    const response = await this.request(method, path, options);
    // The server's schemas fix each route's shape; this client is compiled against the same types.
    return (await response.json()) as T;
  }

  private async request(method: string, path: string, options: { body?: unknown; signal?: AbortSignal | undefined }): Promise<Response> {
    const base = this.currentUrl();
    const headers: Record<string, string> = { authorization: `Bearer ${this.token}` };
    // A JSON content type with no body is a 400 in fastify, so it is sent only along with a body.
    if (options.body !== undefined) headers['content-type'] = 'application/json';
    let response: Response;
    try {
      response = await fetch(`${base}${path}`, {
        method,
        headers,
        body: options.body === undefined ? undefined : JSON.stringify(options.body),
        signal: options.signal ?? null,
      });
    } catch (err) {
      if (options.signal?.aborted) throw err;
      // fetch reports every network failure as "fetch failed"; the cause says which (ECONNREFUSED, ENOTFOUND...).
      const cause = (err as { cause?: unknown }).cause;
      const detail = cause instanceof Error ? cause.message : (err as Error).message;
      throw new ApiUnreachableError(`cannot reach the drover daemon at ${base}: ${detail}`);
    }
    if (response.status === 401) {
      // The daemon answers 401 for a missing, malformed or wrong token (never 403); the fix is on this side.
      throw new ApiError(401, `the daemon refused the token: check ${this.tokenSource} (the daemon says: ${await errorText(response)})`);
    }
    if (!response.ok) throw new ApiError(response.status, await errorText(response));
    return response;
  }

  private currentUrl(): string {
    if (typeof this.location === 'string') return this.location;
    const { file, whenMissing } = this.location;
    let url: string | undefined;
    try {
      url = readDaemonUrl(file);
    } catch (err) {
      throw new ClientSettingsError(`cannot read the daemon's URL from ${file}: ${(err as Error).message}`);
    }
    // A stopped daemon removes the file: that is the daemon unreachable, for as long as a restart takes.
    if (url === undefined) throw new ApiUnreachableError(whenMissing);
    this.lastUrl = withoutTrailingSlash(url);
    return this.lastUrl;
  }
}

async function errorText(response: Response): Promise<string> {
  const text = await response.text();
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed === 'object' && parsed !== null && typeof (parsed as { error?: unknown }).error === 'string') {
      return (parsed as { error: string }).error;
    }
  } catch {
    // Not JSON (a proxy's error page, say): fall through to the raw text.
  }
  return text.trim() || `HTTP ${response.status} ${response.statusText}`;
}

/**
 * Where the daemon is and its token: the URL from `url`, else DROVER_URL, else the config's
 * http.address/port (with http.port 0, the daemon.url file next to its token file, read by the
 * client for each request); the token from DROVER_TOKEN, else the config's http.tokenFile. The
 * config, `config` or the one the daemon reads by default, is read only when one of them has to come from it.
 */
export function resolveClientSettings(options: { config?: string; url?: string }): Required<ApiClientOptions> {
  const configPath = options.config ?? defaultConfigPath();
  // What starts a daemon on this same config, for the messages.
  const runCommand = options.config === undefined ? 'drover run' : `drover run --config ${options.config}`;
  let config: Config | undefined;
  const http = () => (config ??= loadConfig(configPath)).http;

  const url = nonEmpty(options.url) ?? nonEmpty(process.env.DROVER_URL) ?? configuredUrl(http(), configPath, runCommand);

  const fromEnv = nonEmpty(process.env.DROVER_TOKEN);
  if (fromEnv !== undefined) return { url, token: fromEnv, tokenSource: 'DROVER_TOKEN' };
  const tokenFile = http().tokenFile;
  const tokenSource = `DROVER_TOKEN or ${tokenFile}`;
  try {
    return { url, token: readFileSync(tokenFile, 'utf8').trim(), tokenSource };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new ClientSettingsError(`cannot read the API token from ${tokenFile} (http.tokenFile in ${configPath}): ${(err as Error).message}`);
    }
    // Still a settings problem, since the CLI has no token to send (and DROVER_URL may name a daemon
    // elsewhere); but its usual cause is that no daemon ever ran on this state, which is what to say.
    const home = stateHome();
    const fromHome = relative(home, tokenFile);
    const where = fromHome.startsWith('..') || isAbsolute(fromHome) ? `with ${configPath}` : `in DROVER_HOME ${home}`;
    const start = options.config === undefined ? '`drover run` (`npm start` in the repository)' : `\`${runCommand}\``;
    throw new ClientSettingsError(
      `no daemon has been started ${where}: there is no API token file at ${tokenFile} (http.tokenFile in ${configPath}), ` +
        `which the daemon writes on its first start; start it with ${start}, or set DROVER_TOKEN to the token of a daemon running elsewhere`,
    );
  }
}

function configuredUrl(http: HttpSettings, configPath: string, runCommand: string): string | DaemonUrlFile {
  if (http.port !== 0) return urlOf(http.address, http.port);
  // Port 0: the daemon takes whichever port is free at each start and writes down its URL.
  const file = daemonUrlFile(http);
  return {
    file,
    whenMissing:
      `cannot reach the drover daemon: http.port is 0 in ${configPath}, so its URL is read from ${file}, which does not exist; ` +
      `is the daemon running (${runCommand})? Or set DROVER_URL`,
  };
}

function withoutTrailingSlash(url: string): string {
  return url.replace(/\/+$/, '');
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

function urlOf(address: string, port: number): string {
  // A daemon listening on every interface is reached through loopback.
  const host = address === '0.0.0.0' ? '127.0.0.1' : address === '::' ? '::1' : address;
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
}
