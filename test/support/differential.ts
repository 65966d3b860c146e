/**
 * The differential check (test/differential.test.ts, scripts/soak.mjs): test/programs/diff_workload run once
 * uninterrupted, and once dumped at step K and restored lazily; both runs must print the same digest of their
 * memory. The restores go through one page service the caller owns, so it can count the events it served.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type ImageStore } from '../../daemon/store/index.js';
import { dump } from '../../daemon/dump/index.js';
import { restoreImage, type RestoreCompletion } from '../../daemon/restore/index.js';
import { PageService } from '../../daemon/page-service.js';
import type { PageServiceTaskStats, RestoreExit } from '../../native/index.js';
import { keepAlive, killAll, Workload } from './restore.js';

const DIGEST = /^DIGEST ([0-9a-f]{16})$/m;
const RUN_MS = 120_000;

/** Page service events by kind, over every restore it served. */
export interface EventCounts {
  fork: number;
  remap: number;
  remove: number;
  unmap: number;
  complete: number;
  exit: number;
  error: number;
}

/** A page service that counts what it reports. */
export function countingService(): {
  service: PageService;
  counts: EventCounts;
  errors: string[];
  /** The final counters of every task the service let go (complete and exit events). */
  finals: PageServiceTaskStats[];
} {
  const service = new PageService();
  const counts: EventCounts = { fork: 0, remap: 0, remove: 0, unmap: 0, complete: 0, exit: 0, error: 0 };
  const errors: string[] = [];
  const finals: PageServiceTaskStats[] = [];
  service.on('event', (e) => {
    if (e.type === 'error') errors.push(e.message);
    if (e.type === 'complete' || e.type === 'exit') finals.push(e.stats);
    if (e.type !== 'need') counts[e.type]++;
  });
  return { service, counts, errors, finals };
}

/** Digest of an uninterrupted run. */
export async function plainDigest(dir: string, seed: number, steps: number): Promise<string> {
  const w = new Workload(join(dir, `plain-${seed}-${steps}.txt`), 'diff_workload', [String(seed), String(steps)]);
  try {
    await w.started();
    const status = await w.reaped();
    const m = DIGEST.exec(w.output());
    if (status !== 0 || !m) throw new Error(`seed ${seed}: the plain run ended with status ${status}: ${w.output()}`);
    return m[1]!;
  } finally {
    w.kill();
  }
}

export interface RestoredRun {
  digest: string;
  completion: RestoreCompletion;
  exit: RestoreExit;
}

/** Digest of a run dumped before step `k` and restored lazily through `service`. */
export async function restoredDigest(
  store: ImageStore,
  dir: string,
  seed: number,
  steps: number,
  k: number,
  service: PageService,
  tag = '',
): Promise<RestoredRun> {
  const name = `diff-${seed}-${steps}-${k}${tag}`;
  const go = join(dir, `go-${name}`);
  const w = new Workload(join(dir, `${name}.txt`), 'diff_workload', [String(seed), String(steps), String(k), go]);
  let pid = 0;
  try {
    pid = await w.started();
    await w.waitOutput(/^PAUSE \d+$/m, RUN_MS);
    await dump(store, pid, { name });
    await w.reaped();
    // The go file exists before the restore: the restored copy goes on at once, racing the background copy.
    writeFileSync(go, '');
    const tree = await restoreImage(store, name, { pageService: service });
    const completion = await keepAlive(tree.complete);
    const exit = await keepAlive(tree.exited);
    const m = DIGEST.exec(w.output());
    if (exit.kind !== 'exited' || exit.status !== 0 || !m) {
      throw new Error(`seed ${seed} K ${k}: the restored run ended ${JSON.stringify(exit)}: ${w.output()}`);
    }
    return { digest: m[1]!, completion, exit };
  } finally {
    w.kill();
    killAll([pid]);
  }
}
