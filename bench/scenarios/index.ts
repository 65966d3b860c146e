/**
 * The registry of scenarios: one module per scenario, run in this order.
 * `--only` picks by name, or by a group name (`criu`). Scenarios that cannot
 * run here are listed in `planned`, with what they need, so they are named
 * in every report instead of being faked or silently left out.
 */
import type { PlannedScenario, Scenario } from '../lib/types.js';
import { backgroundCopy } from './background-copy.js';
import type { FaultContext } from './context.js';
import { criuDump } from './criu-dump.js';
import { criuFaultLatency } from './criu-fault-latency.js';
import { criuRestore } from './criu-restore.js';
import { dumpScenario } from './dump.js';
import { faultLatencyStore } from './fault-latency-store.js';
import { faultLatency } from './fault-latency.js';
import { faultThreads } from './fault-threads.js';
import { forkStorm } from './fork-storm.js';
import { residency } from './residency.js';
import { restoreLatency } from './restore-latency.js';

/** The same workloads through the criu binary named by $CRIU, side by side with ours (bench/lib/criu-rig.ts). */
const criuScenarios: Array<Scenario<FaultContext>> = [criuDump, criuRestore, criuFaultLatency];

/** The criu binary to compare with, from the environment; null when unset or empty. */
export function criuPath(): string | null {
  return process.env['CRIU'] || null;
}

export const scenarios: Array<Scenario<FaultContext>> = [
  faultLatency,
  faultThreads,
  forkStorm,
  backgroundCopy,
  faultLatencyStore,
  restoreLatency,
  residency,
  dumpScenario,
  ...(criuPath() ? criuScenarios : []),
];

/** Names `--only` expands to several scenarios. */
export const groups: Record<string, string[]> = { criu: criuScenarios.map((s) => s.name) };

// Not measured, with the reason. Without $CRIU the CRIU side is not run and the restore, residency and dump
// scenarios set ours beside CRIU figures quoted from DESIGN.md §6 instead (labelled as quoted).
export const planned: PlannedScenario[] = criuPath()
  ? []
  : criuScenarios.map((s) => ({
      name: s.name,
      needs: '$CRIU to name a criu binary (e.g. CRIU=/usr/sbin/criu npm run bench); it is unset',
      description: s.description,
    }));
