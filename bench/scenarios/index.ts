/**
 * The registry of scenarios: one module per scenario, run in this order.
 * `--only` picks by name. Scenarios that need parts of lazyrestore not built
 * yet are listed in `planned` so they are named in every report instead of
 * being faked.
 */
import type { PlannedScenario, Scenario } from '../lib/types.js';
import { backgroundCopy } from './background-copy.js';
import type { FaultContext } from './context.js';
import { dumpScenario } from './dump.js';
import { faultLatencyStore } from './fault-latency-store.js';
import { faultLatency } from './fault-latency.js';
import { faultThreads } from './fault-threads.js';
import { forkStorm } from './fork-storm.js';
import { residency } from './residency.js';
import { restoreLatency } from './restore-latency.js';

export const scenarios: Array<Scenario<FaultContext>> = [
  faultLatency,
  faultThreads,
  forkStorm,
  backgroundCopy,
  faultLatencyStore,
  restoreLatency,
  residency,
  dumpScenario,
];

// Not measured, with the reason: there is no criu binary on the development
// machine, so the CRIU runs of the issue are not implemented (a path that was
// never run against a real criu would only produce untested numbers).
export const planned: PlannedScenario[] = [
  {
    name: 'criu',
    needs: process.env['CRIU']
      ? `a CRIU driver, not implemented ($CRIU=${process.env['CRIU']} is set but unused)`
      : 'a criu binary named by $CRIU (none on this machine) and a CRIU driver, not implemented',
    description: 'the restore, residency and dump scenarios through CRIU; quoted CRIU figures are used meanwhile',
  },
];
