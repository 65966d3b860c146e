/**
 * The benchmark's child processes (the C target and the floor monitor), each
 * speaking a line protocol on its standard streams. Every process started here
 * is tracked until it has exited, so an interrupted or failing run kills what
 * it started instead of leaving targets blocked in page faults.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';

/** Processes not yet exited. Module-level on purpose: the SIGINT/SIGTERM
 *  handler and the final sweep of main.ts must reach every one of them, from
 *  whichever scenario started it. */
const live = new Set<LineProcess>();

export class LineProcess {
  readonly child: ChildProcessWithoutNullStreams;
  readonly name: string;
  #lines: string[] = [];
  #waiters: Array<() => void> = [];
  #stderr = '';

  constructor(path: string, args: string[]) {
    this.name = `${path.split('/').pop() ?? path} ${args.join(' ')}`;
    this.child = spawn(path, args, { stdio: 'pipe' });
    live.add(this);
    this.child.once('exit', () => {
      live.delete(this);
      this.#wake();
    });
    // A failed spawn emits 'error' instead of 'exit'.
    this.child.once('error', (e) => {
      this.#stderr += `spawn failed: ${e.message}\n`;
      live.delete(this);
      this.#wake();
    });
    // Writes to a process that died must surface through waitFor, not crash.
    this.child.stdin.on('error', () => {});
    createInterface({ input: this.child.stdout, crlfDelay: Infinity }).on('line', (line) => {
      this.#lines.push(line);
      this.#wake();
    });
    this.child.stderr.on('data', (d: Buffer) => (this.#stderr += d.toString()));
  }

  get pid(): number {
    if (this.child.pid === undefined) throw new Error(`${this.name}: did not start: ${this.#stderr}`);
    return this.child.pid;
  }

  /** What the process wrote on stderr so far. */
  get stderr(): string {
    return this.#stderr;
  }

  get exited(): boolean {
    return this.child.exitCode !== null || this.child.signalCode !== null || !live.has(this);
  }

  send(line: string): void {
    this.child.stdin.write(line + '\n');
  }

  /** The first unread line starting with `prefix` (earlier lines are dropped). */
  async waitFor(prefix: string, timeoutMs = 120_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.#lines.findIndex((l) => l.startsWith(prefix));
      if (i >= 0) return this.#lines.splice(0, i + 1)[i]!;
      const err = this.#lines.find((l) => l.startsWith('ERR'));
      if (err) throw new Error(`${this.name}: ${err}`);
      if (this.exited) {
        const status = this.child.exitCode ?? this.child.signalCode;
        throw new Error(`${this.name}: exited (${status}) before "${prefix}": ${this.#stderr.trim()}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.name}: timed out waiting for "${prefix}": ${this.#stderr.trim()}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Sends `command` and returns the answer line starting with `prefix`. */
  async ask(command: string, prefix: string, timeoutMs?: number): Promise<string> {
    this.send(command);
    return this.waitFor(prefix, timeoutMs);
  }

  /** SIGKILL (if still running) and wait for the exit. */
  async kill(): Promise<void> {
    if (this.exited) return;
    const exit = once(this.child, 'exit');
    this.child.kill('SIGKILL');
    await exit;
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }
}

/** Restored processes (not children of a LineProcess): pids to SIGKILL in the
 *  same last resort. Module-level for the same reason as `live`. */
const restoredPids = new Set<number>();

export function trackPid(pid: number): void {
  restoredPids.add(pid);
}

export function untrackPid(pid: number): void {
  restoredPids.delete(pid);
}

function killPid(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** Kills every process still running (the last resort of main.ts). */
export async function killAll(): Promise<void> {
  for (const pid of restoredPids) killPid(pid);
  await Promise.all([...live].map((p) => p.kill()));
}

/** Synchronous variant for signal handlers and process 'exit'. */
export function killAllNow(): void {
  for (const pid of restoredPids) killPid(pid);
  for (const p of live) {
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
  }
}
