/**
 * A small client of the daemon's REST API (docs/api.md), for the CLI: over the unix socket by default, or over
 * TCP with a bearer token. A problem+json answer becomes a {@link DaemonApiError} carrying the daemon's stable
 * `code`, so the CLI reports it exactly as it reports the same failure run locally; a daemon that is not
 * running is {@link DaemonUnreachableError}.
 */
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { readFileSync } from 'node:fs';
import { defaultSocketPath, parseHostPort } from '../api/endpoint.js';
import { LazyRestoreError } from '../daemon/errors.js';
import type {
  DumpResultBody,
  HealthBody,
  ImageDetailBody,
  ImageListBody,
  JobBody,
  JobListBody,
  ProblemBody,
  ReadinessBody,
  RemoveResultBody,
  RestoreBody,
  RestoreListBody,
  TaskListBody,
} from '../api/schemas.js';

/** The unix socket, or a TCP listener with the token it requires (without one, requests get 401). */
export type Endpoint = { socketPath: string } | { host: string; port: number; token?: string };

/** A failure the daemon answered with problem+json. */
export class DaemonApiError extends Error {
  readonly code: string;
  readonly status: number;
  readonly problem: ProblemBody;
  /** Dump refusals, one per problem found (as LazyRestoreError.problems). */
  readonly problems?: ProblemBody['problems'];

  constructor(problem: ProblemBody) {
    super(problem.detail);
    this.name = 'DaemonApiError';
    this.code = problem.code;
    this.status = problem.status;
    this.problem = problem;
    if (problem.problems !== undefined) this.problems = problem.problems;
  }
}

/** No daemon answers at the endpoint (no socket, nobody listening, or the socket refuses us). */
export class DaemonUnreachableError extends Error {
  readonly code = 'DAEMON_UNREACHABLE';

  constructor(message: string, cause: unknown) {
    super(message, { cause });
    this.name = 'DaemonUnreachableError';
  }
}

export interface EndpointOptions {
  /** Unix socket path (default: defaultSocketPath()). */
  socket?: string;
  /** 'HOST:PORT' of a TCP listener; needs tokenFile. */
  tcp?: string;
  tokenFile?: string;
}

/** The endpoint the options name: TCP when `tcp` is given (with its token), else the unix socket. */
export function resolveEndpoint(options: EndpointOptions = {}): Endpoint {
  if (options.tcp === undefined) return { socketPath: options.socket ?? defaultSocketPath() };
  const address = parseHostPort(options.tcp);
  if (address === null) throw new Error(`${options.tcp}: expected HOST:PORT`);
  if (options.tokenFile === undefined) throw new Error('a TCP endpoint needs a token file');
  return { ...address, token: readFileSync(options.tokenFile, 'utf8').trim() };
}

export interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  contentType: string;
  body: string;
}

function describeEndpoint(e: Endpoint): string {
  return 'socketPath' in e ? e.socketPath : `${e.host}:${e.port}`;
}

function isProblem(v: unknown): v is ProblemBody {
  const p = v as Partial<ProblemBody> | null;
  return typeof p === 'object' && p !== null && typeof p.code === 'string' && typeof p.status === 'number';
}

export class DaemonClient {
  constructor(readonly endpoint: Endpoint) {}

  static fromOptions(options: EndpointOptions = {}): DaemonClient {
    return new DaemonClient(resolveEndpoint(options));
  }

  /**
   * One request; resolves with the raw answer whatever its status. `body` is sent as JSON, unless it is a
   * Buffer or string, which is sent as it is (with `extraHeaders` naming its content type).
   */
  send(method: string, path: string, body?: unknown, extraHeaders: Record<string, string> = {}): Promise<Answer> {
    const raw = typeof body === 'string' || Buffer.isBuffer(body);
    const payload = body === undefined ? undefined : raw ? Buffer.from(body) : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string> = { accept: 'application/json, application/problem+json' };
    if (payload !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(payload.length);
    }
    Object.assign(headers, extraHeaders);
    const e = this.endpoint;
    const target = 'socketPath' in e ? { socketPath: e.socketPath } : { host: e.host, port: e.port };
    if ('token' in e && e.token !== undefined) headers['authorization'] = `Bearer ${e.token}`;
    return new Promise((resolve, reject) => {
      // No keep-alive agent: an idle pooled connection would keep a CLI process alive after its last request.
      const req = httpRequest({ ...target, method, path, headers, agent: false }, (res: IncomingMessage) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            contentType: res.headers['content-type'] ?? '',
            body: Buffer.concat(chunks).toString('utf8'),
          }),
        );
      });
      req.on('error', (err: NodeJS.ErrnoException) => {
        const unreachable = ['ENOENT', 'ECONNREFUSED', 'EACCES', 'ECONNRESET'].includes(err.code ?? '');
        if (!unreachable) return reject(err);
        const why = err.code === 'EACCES' ? 'permission denied' : (err.code ?? err.message);
        reject(
          new DaemonUnreachableError(`cannot reach the lazyrestore daemon at ${describeEndpoint(e)}: ${why}`, err),
        );
      });
      req.end(payload);
    });
  }

  /** A request whose 2xx answer is JSON; anything else throws (DaemonApiError for problem+json). */
  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const a = await this.send(method, path, body);
    const parsed: unknown = a.body === '' ? undefined : JSON.parse(a.body);
    if (a.status >= 200 && a.status < 300) return parsed as T;
    if (isProblem(parsed)) throw new DaemonApiError(parsed);
    throw new Error(`the daemon answered ${method} ${path} with status ${a.status}`);
  }

  /** Whether a daemon answers at the endpoint. */
  async running(): Promise<boolean> {
    try {
      await this.health();
      return true;
    } catch (e) {
      if (e instanceof DaemonUnreachableError) return false;
      throw e;
    }
  }

  health(): Promise<HealthBody> {
    return this.call('GET', '/healthz');
  }

  ready(): Promise<ReadinessBody> {
    return this.call('GET', '/readyz');
  }

  async listImages(): Promise<ImageListBody['images']> {
    return (await this.call<ImageListBody>('GET', '/v1/images')).images;
  }

  inspectImage(name: string): Promise<ImageDetailBody> {
    return this.call('GET', `/v1/images/${encodeURIComponent(name)}`);
  }

  removeImage(name: string): Promise<RemoveResultBody> {
    return this.call('DELETE', `/v1/images/${encodeURIComponent(name)}`);
  }

  dump(request: { pid: number; name?: string; leaveRunning?: boolean }): Promise<DumpResultBody> {
    return this.call('POST', '/v1/dumps', request);
  }

  /** Starts a restore (202 once the image is loaded and its pids are free); follow it with restoreStatus. */
  startRestore(request: { image: string; eager?: boolean; prefetch?: boolean }): Promise<RestoreBody> {
    return this.call('POST', '/v1/restores', request);
  }

  restoreStatus(id: string): Promise<RestoreBody> {
    return this.call('GET', `/v1/restores/${encodeURIComponent(id)}`);
  }

  async restores(): Promise<RestoreListBody['restores']> {
    return (await this.call<RestoreListBody>('GET', '/v1/restores')).restores;
  }

  async tasks(): Promise<TaskListBody['tasks']> {
    return (await this.call<TaskListBody>('GET', '/v1/tasks')).tasks;
  }

  async jobs(): Promise<JobListBody['jobs']> {
    return (await this.call<JobListBody>('GET', '/v1/jobs')).jobs;
  }

  job(id: string): Promise<JobBody> {
    return this.call('GET', `/v1/jobs/${encodeURIComponent(id)}`);
  }
}

/** The options of the commands that use a daemon when one answers (dump, restore, images). */
export const daemonOptions = {
  socket: {
    type: 'string',
    describe: 'The daemon API socket (default: $LAZYRESTORE_SOCKET, else /run/lazyrestore/api.sock for root)',
  },
  url: { type: 'string', describe: 'The daemon TCP API, http://HOST:PORT (needs --token-file)' },
  'token-file': { type: 'string', describe: 'File holding the bearer token of --url' },
} as const;

export interface DaemonArgs {
  socket?: string;
  url?: string;
  'token-file'?: string;
  'data-dir'?: string;
}

/** 'http://HOST:PORT[/]' -> 'HOST:PORT'; anything else (https, a path, no port) is refused. */
function hostPortOfUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new LazyRestoreError('INVALID_ARGUMENT', `--url ${url}: not a URL (expected http://HOST:PORT)`);
  }
  if (u.protocol !== 'http:' || u.port === '' || (u.pathname !== '/' && u.pathname !== '') || u.search !== '') {
    throw new LazyRestoreError('INVALID_ARGUMENT', `--url ${url}: expected http://HOST:PORT`);
  }
  return `${u.hostname}:${u.port}`;
}

/**
 * The daemon a command should go through, or null to work on the store directly:
 *  - `--data-dir` names a store to open here: never a daemon (and naming a daemon as well is an error);
 *  - `--socket` or `--url` name a daemon: it must answer (DAEMON_UNREACHABLE otherwise), since falling back to a
 *    local store the user did not ask for would act on other images;
 *  - neither: the default socket when a daemon answers there, else null.
 */
export async function connectDaemon(args: DaemonArgs): Promise<DaemonClient | null> {
  const named = args.socket !== undefined || args.url !== undefined;
  if (args['data-dir'] !== undefined) {
    if (named)
      throw new LazyRestoreError('INVALID_ARGUMENT', '--data-dir works on a store directly: no --socket or --url');
    return null;
  }
  if (args.url !== undefined && args.socket !== undefined) {
    throw new LazyRestoreError('INVALID_ARGUMENT', 'name one daemon: --socket or --url');
  }
  if (args['token-file'] !== undefined && args.url === undefined) {
    throw new LazyRestoreError('INVALID_ARGUMENT', '--token-file is only used with --url');
  }
  if (args.url !== undefined && args['token-file'] === undefined) {
    throw new LazyRestoreError('INVALID_ARGUMENT', '--url needs --token-file: the TCP API requires the bearer token');
  }
  const client = DaemonClient.fromOptions({
    socket: args.socket,
    tcp: args.url === undefined ? undefined : hostPortOfUrl(args.url),
    tokenFile: args['token-file'],
  });
  if (named) {
    await client.health();
    return client;
  }
  return (await client.running()) ? client : null;
}
