/** Running `dist/bench/main.js` from the bench tests. */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { native } from '../../native/index.js';
import { repoRoot } from './programs.js';

export const benchMain = join(repoRoot, 'dist', 'bench', 'main.js');

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the bench with `args`. `$CRIU` is taken from `criu`, never from the test's own environment: whether the
 *  criu-* scenarios run is the test's choice. */
export function runBench(args: string[], criu: string | null = null): Promise<Run> {
  const env = { ...process.env };
  delete env['CRIU'];
  if (criu !== null) env['CRIU'] = criu;
  return new Promise((resolve) => {
    // The bench kills every process it starts; the timeout kills the bench.
    execFile(
      process.execPath,
      [benchMain, ...args],
      { timeout: 240_000, maxBuffer: 64 << 20, env },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** The bench needs root and a privileged userfaultfd; skips the test otherwise. */
export function usable(t: { skip: (reason: string) => void }): boolean {
  if (process.getuid?.() !== 0) {
    t.skip('the benchmarks need root (privileged userfaultfd, pidfd_getfd)');
    return false;
  }
  try {
    native.uffdProbe();
  } catch (e) {
    t.skip(`userfaultfd unavailable: ${(e as Error).message}`);
    return false;
  }
  return true;
}
