/** The context the fault-service scenarios run in, and their round loop. */
import { abba, newSeed, type FaultRig, type Side } from '../lib/fault-rig.js';
import type { CriuRig } from '../lib/criu-rig.js';
import type { RestoreRig } from '../lib/restore-rig.js';
import type { BenchContext, RoundRecord } from '../lib/types.js';

export interface FaultContext extends BenchContext {
  rig: FaultRig;
  /** The dump and restore apparatus (its store is created on first use). */
  restore: RestoreRig;
  /** The same workloads through the criu binary of $CRIU; null when $CRIU is unset (the criu-* scenarios are
   *  then not registered). */
  criu: CriuRig | null;
}

/** The criu apparatus of a criu-* scenario (registered only when $CRIU is set, so this holds). */
export function criuRig(ctx: FaultContext): CriuRig {
  if (!ctx.criu) throw new Error('this scenario needs $CRIU to name a criu binary');
  return ctx.criu;
}

/** Region size of the fault scenarios: 1 GiB (the figure), 256 MiB with --quick. */
export function regionMiB(ctx: FaultContext): number {
  return ctx.options.mib ?? (ctx.options.quick ? 256 : 1024);
}

/** Rounds per side, run ABBA: six for a full run (the machine's load drifts
 *  between rounds; more, shorter rounds spread it over both sides), two
 *  with --quick. */
export function roundCount(ctx: FaultContext): number {
  return ctx.options.quick ? 2 : 6;
}

export interface Rounds<T> {
  results: Record<Side, T[]>;
  records: RoundRecord[];
  /** The page-order seed of each round (both sides of a round share it). */
  orders: string[];
}

function describe(values: Record<string, number>): string {
  return Object.entries(values)
    .map(([k, v]) => `${k} ${Number(v.toPrecision(4))}`)
    .join(', ');
}

/** Runs `fn` for both sides, `roundCount` times each in ABBA order, logging
 *  and recording what `summary` picks from each result. */
export async function runRounds<T>(
  ctx: FaultContext,
  scenario: string,
  fn: (side: Side, order: string) => Promise<T>,
  summary: (r: T) => Record<string, number>,
): Promise<Rounds<T>> {
  const n = roundCount(ctx);
  const orders = Array.from({ length: n }, newSeed);
  const out: Rounds<T> = { results: { floor: [], ours: [] }, records: [], orders };
  // One discarded run per side first: the first run after a page source or
  // floor image was filled pays for it (the allocator, and in our process
  // the garbage collector reclaiming the fill's buffers on the second core).
  for (const side of ['floor', 'ours'] as const) {
    const values = summary(await fn(side, newSeed()));
    ctx.log(`${scenario}: ${side.padEnd(5)} warm-up (discarded): ${describe(values)}`);
  }
  for (const { side, round } of abba(n)) {
    const r = await fn(side, orders[round]!);
    const values = summary(r);
    out.results[side].push(r);
    out.records.push({ side, round, values });
    ctx.log(`${scenario}: ${side.padEnd(5)} round ${round + 1}/${n}: ${describe(values)}`);
  }
  return out;
}
