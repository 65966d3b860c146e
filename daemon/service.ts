/**
 * The lazyrestore daemon: one process that holds the image store (LevelDB allows a single process, so while
 * the daemon runs every client goes through it), the page service that serves the userfaultfds of lazily
 * restored tasks, the job registry, and the REST API on a unix socket (and on TCP with a bearer token when
 * asked).
 *
 * Every uffd the page service holds is also in custody (daemon/custody/: the keeper process, or systemd's fd
 * store under systemd) and every change of its lazy state journaled, so that neither a crash nor a restart ever
 * closes the last copy of a uffd (which would hand its task zero pages). On start, the daemon takes over the
 * tasks of any predecessor that died or stopped before it serves requests.
 *
 * Shutdown (close(), SIGTERM, SIGINT) is graceful: stop accepting, let requests in flight (dumps) finish, wait
 * for jobs still running, stop the page service without closing the uffds it holds (they stay in custody: their
 * tasks wait for the next daemon), close the store, remove the socket.
 */
import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { FastifyBaseLogger } from 'fastify';
import { buildApi, type ApiInstance } from '../api/app.js';
import { readTokenFile } from '../api/auth.js';
import type { ApiContext } from '../api/context.js';
import { defaultSocketPath, parseHostPort, type TcpAddress } from '../api/endpoint.js';
import { listenTcp, listenUnix, resolveGroup } from '../api/listen.js';
import { DaemonMetrics } from '../api/metrics.js';
import { RestoreRegistry } from '../api/restores.js';
import { Custody, type CustodyMode } from './custody/index.js';
import { recoverTasks, type RecoveryReport } from './custody/recover.js';
import { sdNotify } from './custody/systemd.js';
import { defaultDataDir } from './dump/defaults.js';
import { LazyRestoreError } from './errors.js';
import { JobRegistry } from './jobs.js';
import { PageService } from './page-service.js';
import { ImageStore, isStoreError } from './store/index.js';

export interface DaemonOptions {
  /** Unix socket of the API (default: defaultSocketPath(), /run/lazyrestore/api.sock for root). */
  socketPath?: string;
  /** Image store directory (default: defaultDataDir(), /var/lib/lazyrestore for root). */
  dataDir?: string;
  /** 'HOST:PORT' of a TCP listener; needs `tokenFile`. */
  listen?: string;
  /** File holding the bearer token the TCP listener requires. */
  tokenFile?: string;
  /** Group (name or gid) whose members may use the socket too (mode 0660): they become root-equivalent. */
  group?: string;
  /** pino level of the JSON log on stdout; 'silent' for none. Default 'info'. */
  logLevel?: string;
  /** Where journals of the uffds in custody live (default: `custody/` beside the socket). */
  custodyDir?: string;
  /** Custodian of the uffds (default: systemd's fd store under systemd, else the keeper process). */
  custody?: CustodyMode;
}

export interface Daemon {
  readonly socketPath: string;
  /** The TCP listener's bound address, or null without --listen. */
  readonly tcp: TcpAddress | null;
  readonly dataDir: string;
  readonly store: ImageStore;
  readonly pageService: PageService;
  readonly jobs: JobRegistry;
  readonly log: FastifyBaseLogger;
  /** What the daemon took over from a predecessor at start. */
  readonly recovery: RecoveryReport;
  /** Graceful shutdown (see the module comment); idempotent, resolves once everything is closed. */
  close(): Promise<void>;
}

interface Config {
  socketPath: string;
  dataDir: string;
  tcp: TcpAddress | null;
  token: string | undefined;
  gid: number | undefined;
  logLevel: string;
  custodyDir: string;
  custody: CustodyMode | undefined;
}

/** Every option checked before anything is opened, so a bad command line changes nothing. */
function configure(options: DaemonOptions): Config {
  let tcp: TcpAddress | null = null;
  let token: string | undefined;
  if (options.listen !== undefined) {
    tcp = parseHostPort(options.listen);
    if (tcp === null) throw new LazyRestoreError('INVALID_ARGUMENT', `--listen ${options.listen}: expected HOST:PORT`);
    if (options.tokenFile === undefined) {
      throw new LazyRestoreError(
        'INVALID_ARGUMENT',
        '--listen needs --token-file: the TCP listener only serves requests that carry the bearer token',
      );
    }
    token = readTokenFile(options.tokenFile);
  } else if (options.tokenFile !== undefined) {
    throw new LazyRestoreError('INVALID_ARGUMENT', '--token-file is only used with --listen HOST:PORT');
  }
  const socketPath = options.socketPath ?? defaultSocketPath();
  return {
    socketPath,
    custodyDir: options.custodyDir ?? join(dirname(socketPath), 'custody'),
    custody: options.custody,
    dataDir: defaultDataDir(options.dataDir),
    tcp,
    token,
    gid: options.group === undefined ? undefined : resolveGroup(options.group),
    logLevel: options.logLevel ?? 'info',
  };
}

export function readPidMax(): number {
  const n = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8').trim());
  if (!Number.isInteger(n) || n < 2) throw new Error('cannot read /proc/sys/kernel/pid_max');
  return n;
}

async function openStore(dir: string): Promise<ImageStore> {
  try {
    return await ImageStore.open(dir);
  } catch (e) {
    const unusable = isStoreError(e) && (e.code.startsWith('E') || e.code === 'STORE_OPEN_FAILED');
    if (!unusable) throw e;
    throw new LazyRestoreError('DATA_DIR_UNWRITABLE', `cannot use data directory ${dir}: ${e.message}`, { cause: e });
  }
}

/** Things to undo, last first, when startup fails or the daemon stops. */
class Teardown {
  readonly #steps: Array<() => Promise<void>> = [];

  push(step: () => Promise<void>): void {
    this.#steps.push(step);
  }

  /** Runs every step even if some fail; rethrows the first failure. */
  async run(): Promise<void> {
    let first: Error | undefined;
    for (const step of this.#steps.splice(0).reverse()) {
      try {
        await step();
      } catch (e) {
        first ??= e instanceof Error ? e : new Error(`teardown failed: ${JSON.stringify(e)}`);
      }
    }
    if (first !== undefined) throw first;
  }
}

function wireMetrics(pageService: PageService, jobs: JobRegistry): DaemonMetrics {
  const metrics = new DaemonMetrics();
  pageService.on('event', (e) => metrics.countEvents([e]));
  jobs.onFinish((job) => metrics.jobFinished(job));
  return metrics;
}

/** Starts the daemon; on any failure everything already started is closed again before the error is thrown. */
export async function startDaemon(options: DaemonOptions = {}): Promise<Daemon> {
  const config = configure(options);
  const pidMax = readPidMax();
  const teardown = new Teardown();
  try {
    const store = await openStore(config.dataDir);
    teardown.push(() => store.close());
    const custody = await Custody.open(config.custodyDir, config.custody);
    // Runs after the page service has stopped (teardown goes last first).
    teardown.push(() => Promise.resolve(custody.release()));
    const pageService = new PageService({ custody: custody.serviceConfig() });
    // Every restore in progress listens to the shared service (and stops when it completes): their number is
    // the number of concurrent restores, not a leak.
    pageService.setMaxListeners(0);
    // Lazy tasks must never get zero pages: the uffds stay open (see the module comment).
    teardown.push(() => pageService.close({ closeUffds: false }));
    const jobs = new JobRegistry();
    teardown.push(() => jobs.close());
    // Before any request: a restore must not race with the tasks being taken over.
    const recovery = await recoverTasks(custody, pageService, store);

    const state = { closing: false, storeOpen: true };
    const ctx: ApiContext = {
      store,
      pageService,
      jobs,
      restores: new RestoreRegistry(store, pageService, jobs),
      metrics: wireMetrics(pageService, jobs),
      pidMax,
      startedAt: Date.now(),
      readiness: () => ({ store: state.storeOpen, pageService: !pageService.closed, closing: state.closing }),
    };
    teardown.push(() => {
      state.storeOpen = false;
      return Promise.resolve();
    });

    const apps = await startListeners(ctx, config, teardown);
    const { log } = apps;
    // No task can exist before this point (restores come through the API).
    pageService.on('taskError', (e) => log.error({ event: e }, `page service: task ${e.task} failed: ${e.message}`));
    for (const r of store.recovered) log.warn({ recovered: r }, `store: cleaned up after an unfinished ${r.state}`);
    logRecovery(log, recovery);
    sdNotify(`READY=1\nMAINPID=${process.pid}`);
    log.info(
      { socket: config.socketPath, tcp: apps.tcp, dataDir: config.dataDir, pid: process.pid },
      'lazyrestore daemon ready',
    );
    return daemonHandle(config, apps, ctx, recovery, teardown, () => {
      state.closing = true;
      sdNotify('STOPPING=1');
    });
  } catch (e) {
    await teardown.run().catch(() => undefined);
    throw e;
  }
}

interface Listeners {
  log: FastifyBaseLogger;
  tcp: TcpAddress | null;
}

/**
 * The unix socket first (its app owns the log), then TCP. One teardown step closes them all at once (each
 * lets its in-flight requests finish) and then removes the socket.
 */
async function startListeners(ctx: ApiContext, config: Config, teardown: Teardown): Promise<Listeners> {
  const apps: ApiInstance[] = [];
  let bound = false;
  teardown.push(async () => {
    try {
      await Promise.all(apps.map((app) => app.close()));
    } finally {
      // Only our own socket: a failed start must not remove the socket of the daemon that holds the path.
      if (bound) await rm(config.socketPath, { force: true });
    }
  });
  const unix = await buildApi(ctx, { logLevel: config.logLevel });
  apps.push(unix);
  await listenUnix(unix, { path: config.socketPath, gid: config.gid });
  bound = true;
  let tcp: TcpAddress | null = null;
  if (config.tcp !== null) {
    const app = await buildApi(ctx, { token: config.token, logger: unix.log.child({ listener: 'tcp' }) });
    apps.push(app);
    tcp = await listenTcp(app, config.tcp);
  }
  return { log: unix.log, tcp };
}

function logRecovery(log: FastifyBaseLogger, r: RecoveryReport): void {
  for (const p of r.problems) log.warn({ problem: p }, `custody: ${p}`);
  for (const k of r.killed) log.error({ killed: k }, `custody: killed process ${k.pid}: ${k.reason}`);
  if (r.journals.length > 0) {
    log.info({ adopted: r.adopted, from: r.journals }, `custody: took over ${r.adopted.length} task(s)`);
    void r.complete.then(() => log.info('custody: every task taken over is complete'));
  }
}

function daemonHandle(
  config: Config,
  listeners: Listeners,
  ctx: ApiContext,
  recovery: RecoveryReport,
  teardown: Teardown,
  beginClosing: () => void,
): Daemon {
  let closed: Promise<void> | null = null;
  const { log } = listeners;
  return {
    socketPath: config.socketPath,
    tcp: listeners.tcp,
    dataDir: config.dataDir,
    store: ctx.store,
    pageService: ctx.pageService,
    jobs: ctx.jobs,
    log,
    recovery,
    close: () => {
      closed ??= (async () => {
        beginClosing();
        log.info({ runningJobs: ctx.jobs.running }, 'shutting down');
        await teardown.run();
        log.info('lazyrestore daemon stopped');
      })();
      return closed;
    },
  };
}

/**
 * SIGTERM and SIGINT start a graceful shutdown; a second one while it runs is logged and otherwise ignored
 * (exiting now would close the uffds of lazy tasks: SIGKILL is there for that). Resolves when the daemon has
 * stopped; rejects if the shutdown failed.
 */
export function stopOnSignals(daemon: Daemon): Promise<void> {
  return new Promise((resolve, reject) => {
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        daemon.log.warn({ signal }, 'shutdown already in progress');
        return;
      }
      stopping = true;
      daemon.log.info({ signal }, 'signal received');
      daemon.close().then(
        () => {
          detach();
          resolve();
        },
        (e: unknown) => {
          daemon.log.error({ err: e }, 'shutdown failed');
          detach();
          reject(e instanceof Error ? e : new Error(String(e)));
        },
      );
    };
    let stopping = false;
    const detach = () => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
