/** The machine a run measured, recorded with every result. */
import { execFileSync } from 'node:child_process';
import { cpus, freemem, loadavg, release, totalmem, version } from 'node:os';
import { native, uffdFeatureNames } from '../../native/index.js';

export interface MachineInfo {
  kernel: string;
  kernelVersion: string;
  cpuModel: string;
  cores: number;
  memoryBytes: number;
  freeMemoryBytes: number;
  node: string;
  git: { commit: string | null; dirty: boolean | null };
  uffdFeatures: string[];
  /** 1, 5 and 15 minute load averages: other work on the machine skews figures. */
  loadavg: number[];
}

function git(args: string[], cwd: string): string | null {
  try {
    return execFileSync('git', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}

export function machineInfo(repoRoot: string): MachineInfo {
  const cpu = cpus();
  let uffdFeatures: string[] = [];
  try {
    uffdFeatures = uffdFeatureNames(native.uffdProbe().features);
  } catch {
    // Reported as an empty list; the harness refuses to run without uffd anyway.
  }
  const status = git(['status', '--porcelain', '--untracked-files=no'], repoRoot);
  return {
    kernel: release(),
    kernelVersion: version(),
    cpuModel: cpu[0]?.model.trim() ?? 'unknown',
    cores: cpu.length,
    memoryBytes: totalmem(),
    freeMemoryBytes: freemem(),
    node: process.version,
    git: { commit: git(['rev-parse', 'HEAD'], repoRoot), dirty: status === null ? null : status.length > 0 },
    uffdFeatures,
    loadavg: loadavg().map((v) => Number(v.toFixed(2))),
  };
}
