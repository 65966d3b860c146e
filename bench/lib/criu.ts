/**
 * The criu binary named by $CRIU, driven as a person would drive it: one
 * command line per operation, images in a directory, a log per command.
 * Nothing here knows the workload; bench/lib/criu-rig.ts does. What this
 * module guarantees is that every failure carries criu's own words (the
 * `Error (...)` lines of its log), because on a kernel newer than the criu
 * the interesting result is often the error, and a bench that printed
 * "exit status 1" would hide it.
 *
 * Options used, and why:
 * - `-v4 -o <name>.log`: the log goes into the images directory (criu's
 *   work dir defaults to it), verbose enough to quote the failing step.
 * - `--display-stats`: criu prints its own dump/restore timings on stdout
 *   ("Frozen time: N us", ...), the only source of its frozen time.
 * - no `--shell-job`: the workload is started in a session of its own
 *   (setsid), so criu dumps and restores it without borrowing a terminal.
 * - `criu lazy-pages --status-fd 3`: the daemon writes a byte once its socket
 *   listens, so `restore --lazy-pages` is started only then (it fails if no
 *   daemon listens). Pages come from the local images: no page server.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** A criu command that did not succeed, with what criu said about it. */
export class CriuError extends Error {
  constructor(
    readonly command: string,
    /** The `Error (...)` lines of its log, or its stderr when it wrote no log. */
    readonly criuSays: string,
    detail: string,
  ) {
    super(`criu ${command} ${detail}: ${criuSays}`);
  }
}

/** Most distinct `Error (` lines quoted from one log. The cause is rarely the first (criu's feature probes
 *  log failures of their helpers on the way), so several are kept, in order: cause and unwinding. */
const QUOTED_ERRORS = 6;

/** Causes recognised in criu's errors, with what is known about them, so that a reader of a report does not
 *  have to search for them. Appended to the quoted errors, never instead of them. */
const KNOWN_CAUSES: Array<[RegExp, string]> = [
  [
    /vdso: Unexpected rt vDSO area bounds/,
    'known cause: this criu predates the [vvar_vclock] mapping that Linux 6.13 split off [vvar], so it fails in ' +
      'its start-up (kerndat) before any dump or restore; criu 4.1 and later handle it',
  ],
];

export function knownCause(errors: readonly string[]): string | null {
  for (const [re, why] of KNOWN_CAUSES) if (errors.some((e) => re.test(e))) return why;
  return null;
}

/** The distinct `Error (file:line): message` lines of a criu log, timestamps and pids stripped. */
export function logErrors(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const at = line.indexOf('Error (');
    const error = at >= 0 ? line.slice(at).trim() : null;
    if (error && !out.includes(error)) out.push(error);
  }
  return out;
}

/** Parses the `--display-stats` lines criu prints ("Frozen time: 1234 us", "Memory pages written: 5 (0x5)")
 *  into a map from the label to its first number. */
export function parseDisplayStats(stdout: string): Map<string, number> {
  const stats = new Map<string, number>();
  for (const line of stdout.split('\n')) {
    const m = /^\s*([A-Za-z][A-Za-z ]*?):\s+(\d+)\b/.exec(line);
    if (m) stats.set(m[1]!, Number(m[2]));
  }
  return stats;
}

/** `criu --version` prints "Version: 3.17.1" (and, for a git build, a "GitID:" line). */
export function parseVersion(stdout: string): string | null {
  return /^Version:\s*(\S+)/m.exec(stdout)?.[1] ?? null;
}

export interface CriuDump {
  /** Wall time of `criu dump`, from spawn to exit (criu kills the tree at the end). */
  totalMs: number;
  /** criu's own "Frozen time" (the tree frozen until it was killed), or null if it printed none. */
  frozenMs: number | null;
  /** criu's "Memory dump time" (draining pages from the frozen tree) and "Memory write time" (writing the
   *  images), or null. They overlap, so they are reported apart and never added. */
  memdumpMs: number | null;
  memwriteMs: number | null;
  pagesWritten: number | null;
  /** Sizes of the pages-*.img files: the page data criu wrote. */
  pageBytes: number;
  /** Every file of the images directory (page data, metadata, log). */
  imageBytes: number;
}

/** A process started by the driver that must be ended by the rig (a restore, a lazy-pages daemon). */
export interface CriuProcess {
  readonly child: ChildProcess;
  readonly command: string;
  readonly dir: string;
  readonly log: string;
  readonly running: () => boolean;
  /** Resolves with the exit code (null when killed by a signal). */
  readonly exit: Promise<number | null>;
  stdout(): string;
}

export class Criu {
  private constructor(
    readonly path: string,
    readonly version: string,
  ) {}

  /** Runs `criu --version`: a missing or foreign binary is reported here, before any workload starts. */
  static async open(path: string): Promise<Criu> {
    const r = await run(path, ['--version']).catch((e: Error) => {
      throw new Error(`cannot run $CRIU=${path}: ${e.message}`);
    });
    const version = parseVersion(r.stdout);
    if (r.code !== 0 || !version)
      throw new Error(`$CRIU=${path} is not a criu binary: --version exited ${r.code}: ${r.stdout}${r.stderr}`);
    return new Criu(path, version);
  }

  /** `criu dump -t <pid> -D <dir>`: the tree is killed afterwards (criu's default). */
  async dump(pid: number, dir: string): Promise<CriuDump> {
    const t0 = process.hrtime.bigint();
    const r = await run(this.path, ['dump', '-t', String(pid), '-D', dir, ...logArgs('dump'), '--display-stats']);
    const totalMs = Number(process.hrtime.bigint() - t0) / 1e6;
    if (r.code !== 0) throw failure('dump', dir, 'dump.log', r);
    const stats = parseDisplayStats(r.stdout);
    const ms = (k: string) => (stats.has(k) ? stats.get(k)! / 1000 : null);
    const files = readdirSync(dir).map((f) => ({ f, size: statSync(join(dir, f)).size }));
    return {
      totalMs,
      frozenMs: ms('Frozen time'),
      memdumpMs: ms('Memory dump time'),
      memwriteMs: ms('Memory write time'),
      pagesWritten: stats.get('Memory pages written') ?? null,
      pageBytes: files.filter((x) => /^pages-\d+\.img$/.test(x.f)).reduce((a, x) => a + x.size, 0),
      imageBytes: files.reduce((a, x) => a + x.size, 0),
    };
  }

  /** Starts `criu lazy-pages` on the images of `dir` and resolves once its socket listens. The daemon exits
   *  by itself when every page has been placed (or the restored tree is gone). */
  async lazyPages(dir: string, log: string): Promise<CriuProcess> {
    const p = start(this.path, ['lazy-pages', '-D', dir, ...logArgs(log), '--status-fd', '3'], dir, `${log}.log`, true);
    const status = p.child.stdio[3] as NodeJS.ReadableStream;
    const ready = new Promise<boolean>((resolve) => {
      status.once('data', () => resolve(true));
      status.once('end', () => resolve(false));
    });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), 60_000)));
    const ok = await Promise.race([ready, p.exit.then(() => false), timeout]);
    clearTimeout(timer);
    if (ok !== true) {
      await stop(p);
      const what = ok === 'timeout' ? 'after not listening within 60 s' : undefined;
      throw failure('lazy-pages', dir, `${log}.log`, { code: p.child.exitCode, stdout: p.stdout(), stderr: '' }, what);
    }
    return p;
  }

  /** Starts `criu restore` (eager, or `--lazy-pages` with a daemon already listening). It is not detached:
   *  the restored root is its child, so killing the root ends the command too and nothing is left for init
   *  to reap. Running means the restored program's own output; the rig watches that. */
  restore(dir: string, lazy: boolean, log: string): CriuProcess {
    const args = ['restore', '-D', dir, ...logArgs(log), ...(lazy ? ['--lazy-pages'] : [])];
    return start(this.path, args, dir, `${log}.log`, false);
  }

  /** The CriuError of a process that ended before it did what it was for. */
  failed(p: CriuProcess, what: string): CriuError {
    return failure(p.command, p.dir, p.log, { code: p.child.exitCode, stdout: p.stdout(), stderr: '' }, what);
  }
}

function logArgs(name: string): string[] {
  return ['-v4', '-o', `${name}.log`];
}

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(path: string, args: string[]): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(path, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function start(path: string, args: string[], dir: string, log: string, statusFd: boolean): CriuProcess {
  const child = spawn(path, args, { stdio: ['ignore', 'pipe', 'pipe', ...(statusFd ? (['pipe'] as const) : [])] });
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  const exit = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.once('error', (e) => {
      out += `spawn failed: ${e.message}\n`;
      resolve(null);
    });
  });
  return {
    child,
    command: args[0]!,
    dir,
    log,
    running: () => child.exitCode === null && child.signalCode === null,
    exit,
    stdout: () => out,
  };
}

/** SIGKILL (if still running) and wait for the exit. */
export async function stop(p: CriuProcess): Promise<void> {
  if (p.running()) {
    const exited = once(p.child, 'exit');
    p.child.kill('SIGKILL');
    await exited;
  }
}

function failure(command: string, dir: string, log: string, r: RunResult, what?: string): CriuError {
  const path = join(dir, log);
  const errors = existsSync(path) ? logErrors(readFileSync(path, 'latin1')).slice(0, QUOTED_ERRORS) : [];
  const cause = knownCause(errors);
  let said = errors.length > 0 ? errors.join(' | ') : (r.stderr + r.stdout).trim() || '(no log, no output)';
  if (cause) said += ` (${cause})`;
  const how = r.code === null ? 'was killed' : `exited with ${r.code}`;
  return new CriuError(command, said, what ? `${how} ${what}` : how);
}
