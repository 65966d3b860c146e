/**
 * Restore until the process runs, by image size. Three clocks: the engine's
 * own `runningMs` (restoreImage called until every task released), the
 * restored program's first line stamped after the call (in this process),
 * and the whole `lazyrestore restore` CLI command from its spawn until the
 * restored program has printed a line. Lazy must be flat in the image size;
 * eager (all memory written first) is measured beside it. The reference is
 * CRIU's quoted figure; the target is under 40 ms.
 */
import { median } from '../lib/stats.js';
import { figure } from '../lib/stats.js';
import { sourceCache } from '../../daemon/restore/index.js';
import {
  CRIU_EAGER_RESTORE_1G_MS,
  CRIU_LAZY_RUNNING_MS,
  QUOTED_EAGER,
  QUOTED_LAZY,
  TARGET_RUNNING_MS,
} from '../lib/restore-figures.js';
import type { Dumped } from '../lib/restore-rig.js';
import type { Figure, RoundRecord, Scenario } from '../lib/types.js';
import type { FaultContext } from './context.js';

function sizes(ctx: FaultContext): number[] {
  if (ctx.options.mib) return [ctx.options.mib, 2 * ctx.options.mib];
  return ctx.options.quick ? [64, 256] : [64, 1024, 4096];
}

interface SizeResult {
  mib: number;
  engineMs: number[];
  programMs: number[];
  cliMs: number[];
  eagerMs: number;
  eagerProgramMs: number;
}

async function measureSize(ctx: FaultContext, d: Dumped, mib: number, records: RoundRecord[]): Promise<SizeResult> {
  const rig = ctx.restore;
  const rounds = ctx.options.quick ? 2 : 3;
  const r: SizeResult = { mib, engineMs: [], programMs: [], cliMs: [], eagerMs: 0, eagerProgramMs: 0 };
  for (let i = 0; i < rounds; i++) {
    rig.forget(d.result.id);
    const { t0, tree } = await rig.restore(d, false);
    const ran = await d.out.tickAfter(t0);
    await rig.finish(tree);
    r.engineMs.push(tree.runningMs);
    r.programMs.push(Number(ran - t0) / 1e6);
    records.push({
      side: `lazy ${mib} MiB`,
      round: i,
      values: { engineMs: tree.runningMs, programMs: r.programMs[i]! },
    });
    ctx.log(
      `restore-latency: ${mib} MiB lazy: running ${tree.runningMs.toFixed(1)} ms, program ${r.programMs[i]!.toFixed(1)} ms`,
    );
  }
  for (let i = 0; i < rounds; i++) {
    const { programMs } = await rig.restoreCli(d, false);
    r.cliMs.push(programMs);
    records.push({ side: `cli lazy ${mib} MiB`, round: i, values: { programMs } });
    ctx.log(`restore-latency: ${mib} MiB lazy CLI: program ran after ${programMs.toFixed(1)} ms`);
  }
  const { t0, tree } = await ctx.restore.restore(d, true);
  const ran = await d.out.tickAfter(t0);
  await rig.finish(tree);
  r.eagerMs = tree.runningMs;
  r.eagerProgramMs = Number(ran - t0) / 1e6;
  records.push({ side: `eager ${mib} MiB`, round: 0, values: { engineMs: r.eagerMs, programMs: r.eagerProgramMs } });
  ctx.log(`restore-latency: ${mib} MiB eager: running ${r.eagerMs.toFixed(1)} ms`);
  return r;
}

function sizeFigures(r: SizeResult): Figure[] {
  const target = { text: `< ${TARGET_RUNNING_MS} ms`, max: TARGET_RUNNING_MS / CRIU_LAZY_RUNNING_MS.low };
  const lazyRef = CRIU_LAZY_RUNNING_MS.low;
  const eagerRef = r.mib === 1024 ? CRIU_EAGER_RESTORE_1G_MS : null;
  return [
    figure(`${r.mib} MiB lazy: running (engine)`, 'ms', 'lower', median(r.engineMs), lazyRef, QUOTED_LAZY, target),
    figure(`${r.mib} MiB lazy: program ran`, 'ms', 'lower', median(r.programMs), lazyRef, QUOTED_LAZY, target),
    figure(`${r.mib} MiB lazy: CLI until program ran`, 'ms', 'lower', median(r.cliMs), lazyRef, QUOTED_LAZY),
    figure(`${r.mib} MiB eager: running (engine)`, 'ms', 'lower', r.eagerMs, eagerRef, eagerRef ? QUOTED_EAGER : null),
  ];
}

export const restoreLatency: Scenario<FaultContext> = {
  name: 'restore-latency',
  title: 'Restore until the process runs',
  description: 'restoreImage and the whole CLI command until the restored program runs, by image size; lazy and eager',
  async run(ctx) {
    const list = sizes(ctx);
    const records: RoundRecord[] = [];
    const results: SizeResult[] = [];
    // Nothing cached between rounds: every lazy restore starts from the store.
    const limit = sourceCache.limitBytes;
    sourceCache.limitBytes = 0;
    try {
      for (const mib of list) {
        ctx.log(`restore-latency: ${mib} MiB image`);
        const d = await ctx.restore.image(mib);
        ctx.restore.clearCommand(d);
        results.push(await measureSize(ctx, d, mib, records));
      }
    } finally {
      sourceCache.limitBytes = limit;
    }
    const first = results[0]!;
    const last = results[results.length - 1]!;
    const flat = median(last.engineMs) / median(first.engineMs);
    const flatCli = median(last.cliMs) / median(first.cliMs);
    return {
      params: { sizesMiB: list.join(','), lazyRounds: first.engineMs.length },
      figures: [
        ...results.flatMap(sizeFigures),
        figure(`lazy running ${last.mib}/${first.mib} MiB`, 'x', 'lower', flat, null, null),
        figure(`lazy CLI ${last.mib}/${first.mib} MiB`, 'x', 'lower', flatCli, null, null),
      ],
      rounds: records,
      distributions: [],
      notes: [
        `lazy is flat in size when the ratio largest/smallest is near 1: engine ${flat.toFixed(2)}x, CLI ${flatCli.toFixed(2)}x`,
        `the reference is a quoted figure, not measured here (${QUOTED_LAZY}); target < ${TARGET_RUNNING_MS} ms`,
        'CLI: spawn of `node dist/cli/main.js restore` (Node start-up, store open) until the first line the restored program stamped',
      ],
    };
  },
};
