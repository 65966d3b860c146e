/**
 * Starting the C workload programs of test/programs and talking to them over
 * their standard streams: each program prints lines such as "READY <info>" and
 * reads single-line commands on stdin, which keeps the protocol debuggable by
 * hand (run the program in a shell and type).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { dirname, join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
// From dist/test/support back to the checkout root.
export const repoRoot = join(here, '..', '..', '..');

export function programPath(name: string): string {
  return join(repoRoot, 'test', 'programs', 'bin', name);
}

export class Program {
  readonly child: ChildProcessWithoutNullStreams;
  private readonly lines: string[] = [];
  private readonly waiters: Array<() => void> = [];
  private readonly rl: Interface;
  stderr = '';

  constructor(name: string, args: string[] = [], env: NodeJS.ProcessEnv = process.env) {
    this.child = spawn(programPath(name), args, { env, stdio: 'pipe' });
    this.rl = createInterface({ input: this.child.stdout });
    this.rl.on('line', (line) => {
      this.lines.push(line);
      for (const w of this.waiters.splice(0)) w();
    });
    this.child.stderr.on('data', (d: Buffer) => (this.stderr += d.toString()));
  }

  get pid(): number {
    if (this.child.pid === undefined) throw new Error('program did not start');
    return this.child.pid;
  }

  /** Resolves with the first unread line that starts with `prefix` (earlier lines are dropped). */
  async waitFor(prefix: string, timeoutMs = 20_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.lines.findIndex((l) => l.startsWith(prefix));
      if (i >= 0) return this.lines.splice(0, i + 1)[i]!;
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(
          `program exited (${this.child.exitCode ?? this.child.signalCode}) before "${prefix}"; stderr: ${this.stderr}`,
        );
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for "${prefix}"; stderr: ${this.stderr}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 200));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  send(line: string): void {
    this.child.stdin.write(line + '\n');
  }

  async exit(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.child.exitCode === null && this.child.signalCode === null) await once(this.child, 'exit');
    return { code: this.child.exitCode, signal: this.child.signalCode };
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}
