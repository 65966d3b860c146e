/**
 * The apparatus of the dump and restore scenarios: a throw-away image store,
 * the workload (bench/reference/restore_workload.c) started through
 * test/programs/bin/restore_launch (the dump refuses a child of its caller),
 * its output file read as it grows, and restores run in this process (the
 * engine's own timestamps) or through the CLI (a process of its own, timed
 * from outside). Timestamps of the workload are CLOCK_MONOTONIC, the clock of
 * process.hrtime, so "the restored program ran" is read from its own line.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dump, type DumpResult } from '../../daemon/dump/index.js';
import { restoreImage, sourceCache, type RestoreCompletion, type RestoredTree } from '../../daemon/restore/index.js';
import { ImageStore } from '../../daemon/store/index.js';
import { LineProcess, trackPid, untrackPid } from './process.js';

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function nowNs(): bigint {
  return process.hrtime.bigint();
}

/** Keeps the event loop alive while `p` is pending (a restored root's exit alone does not). */
async function keepAlive<T>(p: Promise<T>): Promise<T> {
  const timer = setInterval(() => undefined, 1000);
  try {
    return await p;
  } finally {
    clearInterval(timer);
  }
}

/** A file another process appends lines to, read incrementally. */
export class OutputFile {
  #pos = 0;
  #partial = '';
  #lines: string[] = [];

  constructor(readonly path: string) {}

  #read(): void {
    if (!existsSync(this.path)) return;
    const fd = openSync(this.path, 'r');
    try {
      const buf = Buffer.allocUnsafe(1 << 20);
      for (;;) {
        const n = readSync(fd, buf, 0, buf.length, this.#pos);
        if (n <= 0) break;
        this.#pos += n;
        const parts = (this.#partial + buf.toString('latin1', 0, n)).split('\n');
        this.#partial = parts.pop()!;
        this.#lines.push(...parts);
      }
    } finally {
      closeSync(fd);
    }
  }

  /** Puts the file back to `size` bytes (the restore refuses an open file whose size changed since the dump)
   *  and forgets every line read: the next wait looks only at what a restored copy writes. */
  rewind(size: number): void {
    truncateSync(this.path, size);
    this.#pos = size;
    this.#partial = '';
    this.#lines = [];
  }

  /** Waits for a line that `match` accepts; returns it and every line before it. */
  async waitFor(
    what: string,
    match: (line: string) => boolean,
    alive: () => boolean = () => true,
    timeoutMs = 300_000,
  ): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      this.#read();
      const i = this.#lines.findIndex(match);
      if (i >= 0) return this.#lines.splice(0, i + 1);
      const bad = this.#lines.find((l) => / BAD |^UNKNOWN|^restore_workload:/.test(l));
      if (bad) throw new Error(`restore_workload: ${bad}`);
      if (!alive()) throw new Error(`gave up waiting for ${what} in ${this.path}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} in ${this.path}`);
      await sleep(1);
    }
  }

  /** The first TICK stamped after `t0`: the program ran then. */
  async tickAfter(t0: bigint, alive?: () => boolean): Promise<bigint> {
    const lines = await this.waitFor('a TICK line', (l) => l.startsWith('TICK ') && BigInt(l.slice(5)) > t0, alive);
    return BigInt(lines[lines.length - 1]!.slice(5));
  }
}

/** Waits until `pid` no longer exists (reaped by its parent or by init). */
export async function gone(pid: number, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (existsSync(`/proc/${pid}`)) {
    if (Date.now() > deadline) throw new Error(`process ${pid} did not go away`);
    await sleep(5);
  }
}

function kill(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

export interface Dumped {
  name: string;
  pid: number;
  out: OutputFile;
  /** Size of the output file at the dump. */
  outSize: number;
  go: string;
  result: DumpResult;
}

export class RestoreRig {
  readonly dir = mkdtempSync(join(tmpdir(), 'lazyrestore-bench-'));
  #store: ImageStore | null = null;
  #n = 0;
  readonly #images = new Map<string, Promise<Dumped>>();

  constructor(
    readonly workload: string,
    readonly launcher: string,
    readonly cli: string,
    readonly log: (message: string) => void,
  ) {}

  get storeDir(): string {
    return join(this.dir, 'store');
  }

  async store(): Promise<ImageStore> {
    this.#store ??= await ImageStore.open(this.storeDir);
    return this.#store;
  }

  /** The CLI opens the store itself: LevelDB allows one process at a time. */
  async closeStore(): Promise<void> {
    const s = this.#store;
    this.#store = null;
    await s?.close();
  }

  /** Starts a workload of `mib` MiB (and `children` forked sharers), dumps it (which kills it) and waits until
   *  its pid is free again for a restore. */
  async dumpWorkload(mib: number, seed: string, children = 0): Promise<Dumped> {
    const name = `bench-${++this.#n}`;
    this.log(`dumping a ${mib} MiB workload${children > 0 ? ` with ${children} children` : ''} (${name})`);
    const outPath = join(this.dir, `${name}.out`);
    const go = join(this.dir, `${name}.go`);
    const args = [String(mib), seed, go, ...(children > 0 ? ['children', String(children)] : [])];
    const launch = new LineProcess(this.launcher, [outPath, this.workload, ...args]);
    try {
      const pid = Number((await launch.waitFor('PID', 30_000)).split(' ')[1]);
      const out = new OutputFile(outPath);
      await out.waitFor(
        'READY',
        (l) => l.startsWith('READY'),
        () => !launch.exited,
      );
      const result = await dump(await this.store(), pid, { name });
      // The launcher reaps the workload the dump killed: then its pid is free for a restore.
      await gone(pid, 60_000);
      return { name, pid, out, outSize: statSync(outPath).size, go, result };
    } finally {
      await launch.kill();
    }
  }

  /** A dumped workload of `mib` MiB (and `children`), dumped once per run and shared by the scenarios (a dump
   *  of 1 GiB takes seconds): whichever scenario comes first pays for it, and the dump scenario reports it. */
  image(mib: number, children = 0): Promise<Dumped> {
    const key = `${mib}/${children}`;
    let p = this.#images.get(key);
    if (!p) {
      p = this.dumpWorkload(mib, String(0x5eed0000 + mib * 16 + children), children);
      this.#images.set(key, p);
      p.catch(() => this.#images.delete(key));
    }
    return p;
  }

  /** Removes an image's sources from this process's cache, so the next restore reads the store. */
  forget(imageId: string): void {
    sourceCache.drop(imageId);
  }

  /** Restores in this process; `t0` is taken right before the call. */
  async restore(d: Dumped, eager: boolean): Promise<{ t0: bigint; tree: RestoredTree }> {
    const store = await this.store();
    d.out.rewind(d.outSize);
    const t0 = nowNs();
    const tree = await restoreImage(store, d.name, { eager });
    trackPid(tree.rootPid);
    return { t0, tree };
  }

  /** Kills a tree restored here and waits for its completion and its exit, so its pid is free again. */
  async finish(tree: RestoredTree): Promise<RestoreCompletion> {
    kill(tree.rootPid);
    const done = await keepAlive(tree.complete);
    await keepAlive(tree.exited);
    untrackPid(tree.rootPid);
    await gone(tree.rootPid);
    return done;
  }

  /** `node dist/cli/main.js restore` in a process of its own: ms from the spawn until the restored program
   *  printed its first line, and the CLI's own report. */
  async restoreCli(d: Dumped, eager: boolean): Promise<{ programMs: number; report: { runningMs: number } }> {
    await this.closeStore();
    d.out.rewind(d.outSize);
    const args = [this.cli, 'restore', d.name, '--data-dir', this.storeDir, '--json', ...(eager ? ['--eager'] : [])];
    const t0 = nowNs();
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    trackPid(d.pid);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const exit = once(child, 'exit');
    const running = () => child.exitCode === null && child.signalCode === null;
    try {
      const ran = await d.out.tickAfter(t0, running).catch((e: Error) => {
        throw new Error(`${e.message}: restore CLI: ${stderr.trim() || stdout.trim()}`);
      });
      kill(d.pid);
      const [code] = (await exit) as [number | null];
      if (code !== 0) throw new Error(`restore CLI exited with ${code}: ${stderr.trim() || stdout.trim()}`);
      return { programMs: Number(ran - t0) / 1e6, report: JSON.parse(stdout) as { runningMs: number } };
    } finally {
      kill(d.pid);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await gone(d.pid);
      untrackPid(d.pid);
    }
  }

  /** Writes the command the restored program runs as soon as it looks (before or after the restore). */
  command(d: Dumped, line: string): void {
    writeFileSync(d.go, line + '\n');
  }

  clearCommand(d: Dumped): void {
    rmSync(d.go, { force: true });
  }

  async close(): Promise<void> {
    await this.closeStore();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
