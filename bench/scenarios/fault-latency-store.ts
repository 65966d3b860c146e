/**
 * First-touch latency of random pages of a really restored process: the
 * workload is dumped, told to time first touches, and restored lazily: once
 * with the image only in the store (the source cache forgotten), and once
 * more with it in memory (the second restore is served from this process's
 * source cache). The C floor times the same page order on fault_target. The
 * engine has no option to turn the background copy off, so it runs: the
 * workload asks mincore(2) before each touch whether the page is already in,
 * and the latency figures are of the touches that found it missing.
 */
import { sourceCache } from '../../daemon/restore/index.js';
import { FLOOR_NAME, MiB, PAGE, newSeed } from '../lib/fault-rig.js';
import type { Dumped } from '../lib/restore-rig.js';
import { parseTouches, type Touches as Samples } from '../lib/touches.js';
import { figure, latencyFigures, summarize } from '../lib/stats.js';
import type { RestoreCompletion } from '../../daemon/restore/index.js';
import type { Distribution, Figure, RoundRecord, Scenario } from '../lib/types.js';
import { regionMiB, type FaultContext } from './context.js';

interface Touches extends Samples {
  done: RestoreCompletion;
}

async function restoreAndTouch(ctx: FaultContext, d: Dumped): Promise<Touches> {
  const { tree } = await ctx.restore.restore(d, false);
  try {
    const samples = parseTouches(await d.out.waitFor('LAT OK', (l) => l.startsWith('LAT OK')));
    // The whole image in the source before the next restore: wait for completion, then end the program.
    await tree.complete;
    return { ...samples, done: await ctx.restore.finish(tree) };
  } catch (e) {
    await ctx.restore.finish(tree).catch(() => undefined);
    throw e;
  }
}

export const faultLatencyStore: Scenario<FaultContext> = {
  name: 'fault-latency-store',
  title: 'First-touch latency of a restored process',
  description: 'random first touches of a lazily restored process: image in the store, then in memory, vs the C floor',
  async run(ctx) {
    const mib = regionMiB(ctx);
    const count = Math.min(ctx.options.faults ?? (ctx.options.quick ? 5000 : 20_000), (mib * MiB) / PAGE);
    const order = newSeed();
    ctx.log(`fault-latency-store: ${mib} MiB image; ${count} first touches`);
    const d = await ctx.restore.image(mib);
    ctx.restore.command(d, `lat ${order} ${count}`);
    const limit = sourceCache.limitBytes;
    sourceCache.limitBytes = Math.max(limit, 2 * mib * MiB);
    let store: Touches;
    let memory: Touches;
    try {
      ctx.restore.forget(d.result.id);
      store = await restoreAndTouch(ctx, d);
      memory = await restoreAndTouch(ctx, d);
    } finally {
      sourceCache.limitBytes = limit;
      ctx.restore.forget(d.result.id);
      ctx.restore.clearCommand(d);
    }
    if (memory.done.cachedBytes === 0) throw new Error('the second restore was not served from memory (cachedBytes 0)');
    const floor = await ctx.rig.session('floor', mib, count, (t) => t.lat(ctx.rig.seed, order, count));
    const rounds: RoundRecord[] = [
      { side: 'store', round: 0, values: { faultPages: store.done.faultPages, bgPages: store.done.backgroundPages } },
      { side: 'memory', round: 0, values: { faultPages: memory.done.faultPages, cached: memory.done.cachedBytes } },
    ];
    const p50Target = { text: 'p50 <= 1.2x floor', max: 1.2 };
    const figures: Figure[] = [];
    const distributions: Distribution[] = [];
    const notes: string[] = [];
    for (const [side, t] of [
      ['store', store],
      ['memory', memory],
    ] as const) {
      const share = 1 - t.missing.length / t.ns.length;
      figures.push(figure(`${side}: touches found resident`, '%', 'lower', 100 * share, null, null));
      notes.push(
        `image in ${side}: ${t.ns.length - t.missing.length} of ${t.ns.length} touched pages were already resident ` +
          `(placed by the background copy first); the restore placed ${t.done.faultPages} pages by fault, ` +
          `${t.done.backgroundPages} in background`,
      );
      if (t.missing.length === 0) {
        notes.push(`image in ${side}: no touch found its page missing, so no fault latency was measured`);
        continue;
      }
      figures.push(
        ...latencyFigures(
          `${side}, missing: `,
          t.missing,
          floor,
          FLOOR_NAME,
          side === 'memory' ? p50Target : undefined,
        ),
      );
      distributions.push({
        name: `fault-latency-${side}`,
        title: `Restored process, image in ${side}: first touches of missing pages (${t.missing.length} of ${count}, ${mib} MiB)`,
        ours: summarize(`ours (restored, ${side})`, t.missing),
        reference: summarize('C floor', floor),
      });
    }
    notes.push(
      'the engine has no option to disable its background copy, so it runs during the touches; the latency ' +
        'figures are of the touches whose page mincore(2) found missing just before (real faults)',
    );
    return {
      params: { regionMiB: mib, faults: count, seed: ctx.rig.seed, orderSeed: order },
      figures,
      rounds,
      distributions,
      notes,
    };
  },
};
