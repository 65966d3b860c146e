/**
 * Helpers of the restore tests: workloads started as grandchildren of the test process (the dump refuses a
 * child of its own caller) through test/programs/bin/restore_launch, with their output in a file; dumping them
 * into a throw-away store (three-process trees too); and checks that no process of an image is left.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { checkLazySupported } from '../../daemon/restore/lazy.js';
import { dump } from '../../daemon/dump/index.js';
import type { ImageStore } from '../../daemon/store/index.js';
import { programPath } from './programs.js';

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function tempDir(prefix: string): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), `lazyrestore-${prefix}-`));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** Polls `fn` until it returns a value other than undefined, or fails after `timeoutMs`. */
export async function until<T>(what: string, fn: () => T | undefined, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** A workload under restore_launch; its stdout and stderr go to `out`. */
export class Workload {
  readonly launcher: ChildProcessWithoutNullStreams;
  private text = '';
  pid = 0;

  constructor(
    readonly out: string,
    program: string,
    args: string[],
  ) {
    const exe = program.startsWith('/') ? program : programPath(program);
    this.launcher = spawn(programPath('restore_launch'), [out, exe, ...args], { stdio: 'pipe' });
    this.launcher.stdout.on('data', (d: Buffer) => (this.text += d.toString()));
    this.launcher.stderr.on('data', (d: Buffer) => (this.text += d.toString()));
  }

  async started(): Promise<number> {
    this.pid = await until('the workload pid', () => {
      const m = /PID (\d+)/.exec(this.text);
      return m ? Number(m[1]) : undefined;
    });
    return this.pid;
  }

  output(): string {
    return existsSync(this.out) ? readFileSync(this.out, 'utf8') : '';
  }

  /** Waits until the output file matches `re`; returns the match. */
  waitOutput(re: RegExp, timeoutMs = 30_000): Promise<RegExpExecArray> {
    return until(`${re} in ${this.out}`, () => re.exec(this.output()) ?? undefined, timeoutMs);
  }

  /** Waits until the launcher reaped the original workload (after a dump killed it): its pid is free. */
  async reaped(): Promise<number> {
    return until('the launcher to reap the workload', () => {
      const m = /EXIT (\d+)/.exec(this.text);
      return m ? Number(m[1]) : undefined;
    });
  }

  kill(): void {
    if (this.pid > 0) {
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    if (this.launcher.exitCode === null) this.launcher.kill('SIGKILL');
  }
}

/** SIGKILLs every pid that still exists. */
export function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

/** Waits until none of `pids` exists any more (zombies re-parented to init are reaped by it); returns those
 *  still there after the timeout. */
export async function leftOver(pids: number[], timeoutMs = 15_000): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = pids.filter((p) => existsSync(`/proc/${p}`));
    if (left.length === 0 || Date.now() > deadline) return left;
    await sleep(20);
  }
}

/** Keeps Node's event loop alive while `p` is pending (a restored root's exit does not by itself). */
export async function keepAlive<T>(p: Promise<T>): Promise<T> {
  const timer = setInterval(() => undefined, 1000);
  try {
    return await p;
  } finally {
    clearInterval(timer);
  }
}

/** Why lazy restore cannot run on this kernel (the message of LAZY_UNSUPPORTED), or false when it can. */
export function lazyMissing(): string | false {
  try {
    checkLazySupported();
    return false;
  } catch (e) {
    return (e as Error).message;
  }
}

/** A parent and two children started by a test program that prints "READY <parent> <child1> <child2>" once its
 *  memory is filled, then waits for its GOFILE. */
export interface StartedTree {
  w: Workload;
  pids: number[];
  go: string;
}

/** A tree dumped (and gone): `size` is its output's length at the dump. */
export interface DumpedTree extends StartedTree {
  size: number;
}

/** Starts `program` with `args(go)` (output and go file named after `name` in `dir`) and waits until it is READY. */
export async function startTree(
  dir: string,
  name: string,
  program: string,
  args: (go: string) => string[],
): Promise<StartedTree> {
  const go = join(dir, `go-${name}`);
  const w = new Workload(join(dir, `${name}.txt`), program, args(go));
  await w.started();
  const m = await w.waitOutput(/^READY (\d+) (\d+) (\d+)$/m);
  return { w, pids: [Number(m[1]), Number(m[2]), Number(m[3])], go };
}

/** Dumps a started tree as image `name` and waits until all three processes are gone. */
export async function dumpTree(store: ImageStore, t: StartedTree, name: string): Promise<DumpedTree> {
  const d = await dump(store, t.pids[0]!, { name });
  assert.equal(d.processes, 3);
  await t.w.reaped();
  assert.deepEqual(await leftOver(t.pids), []);
  return { ...t, size: t.w.output().length };
}

/** Every process printed VERIFY OK, the parent ALL OK, and nothing failed. */
export function assertTreeVerified(text: string): void {
  for (const role of ['parent', 'child1', 'child2']) assert.match(text, new RegExp(`^VERIFY OK ${role}$`, 'm'), text);
  assert.match(text, /^ALL OK$/m, text);
  assert.doesNotMatch(text, /FAIL/);
}
