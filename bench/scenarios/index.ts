/**
 * The registry of scenarios: one module per scenario, run in this order.
 * `--only` picks by name. Scenarios that need parts of lazyrestore not built
 * yet are listed in `planned` so they are named in every report instead of
 * being faked.
 */
import type { PlannedScenario, Scenario } from '../lib/types.js';
import { backgroundCopy } from './background-copy.js';
import type { FaultContext } from './context.js';
import { faultLatency } from './fault-latency.js';
import { faultThreads } from './fault-threads.js';
import { forkStorm } from './fork-storm.js';

export const scenarios: Array<Scenario<FaultContext>> = [faultLatency, faultThreads, forkStorm, backgroundCopy];

// TODO(restore): these need restore (daemon/restore/), dump (daemon/dump/)
// and the image store feeding a PageSource; add each as a module here when
// its parts land. The CRIU variants run when $CRIU names a criu binary.
export const planned: PlannedScenario[] = [
  {
    name: 'fault-latency-store',
    needs: 'restore',
    description: 'first-touch latency with the image only in the LevelDB store (demand reads feed the page source)',
  },
  {
    name: 'restore-latency',
    needs: 'restore',
    description: 'restore request to running, and the whole CLI command, for 64 MiB, 1 GiB and 4 GiB images; eager too',
  },
  {
    name: 'residency',
    needs: 'restore',
    description: 'restore until 1 GiB is fully resident (vs CRIU 0.77 s); background copy from the store',
  },
  {
    name: 'dump',
    needs: 'dump',
    description: 'dump total and freeze time, bytes stored, dedup ratio: 1 GiB process and a parent with 8 children',
  },
  { name: 'criu', needs: 'restore, dump and $CRIU', description: 'the same scenarios through CRIU' },
];
