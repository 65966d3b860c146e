/** Builds the C programs of bench/reference with make, into dist/bench/bin. */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import type { ReferenceBinaries } from './fault-rig.js';

export function buildReference(repoRoot: string): ReferenceBinaries {
  const out = join(repoRoot, 'dist', 'bench', 'bin');
  try {
    execFileSync('make', ['-s', '-C', join(repoRoot, 'bench', 'reference'), `OUT=${out}`], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    throw new Error(`building bench/reference failed: ${err.message}\n${err.stdout ?? ''}${err.stderr ?? ''}`);
  }
  return {
    faultTarget: join(out, 'fault_target'),
    uffdFloor: join(out, 'uffd_floor'),
    restoreWorkload: join(out, 'restore_workload'),
  };
}
