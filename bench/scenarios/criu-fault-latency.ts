/**
 * First-touch latency of random pages of a lazily restored process, served
 * by our page service (image in the store, nothing cached) and by criu's
 * lazy-pages daemon (image in its files), in the same run, same workload,
 * same page order; the C floor times the same order on fault_target. The
 * workload times each touch itself and asks mincore(2) first whether the
 * page is already in: both tools copy the rest of the image in the
 * background meanwhile, so the latency figures are of the touches that
 * found their page missing (real faults), and the share found resident is a
 * figure of its own.
 */
import { sourceCache } from '../../daemon/restore/index.js';
import { attempt, map, vsCriu, type Attempt } from '../lib/criu-figures.js';
import type { CriuImage, CriuRig } from '../lib/criu-rig.js';
import { FLOOR_NAME, MiB, PAGE, newSeed } from '../lib/fault-rig.js';
import type { Dumped } from '../lib/restore-rig.js';
import { figure, quantile, sorted, summarize } from '../lib/stats.js';
import { parseTouches, type Touches } from '../lib/touches.js';
import type { Distribution, Figure, Scenario } from '../lib/types.js';
import { criuRig, regionMiB, type FaultContext } from './context.js';

const isLatOk = (l: string) => l.startsWith('LAT OK');

async function ours(ctx: FaultContext, d: Dumped): Promise<Touches> {
  ctx.restore.forget(d.result.id);
  const { tree } = await ctx.restore.restore(d, false);
  try {
    const touches = parseTouches(await d.out.waitFor('LAT OK', isLatOk));
    await tree.complete;
    await ctx.restore.finish(tree);
    return touches;
  } catch (e) {
    await ctx.restore.finish(tree).catch(() => undefined);
    throw e;
  }
}

async function theirs(rig: CriuRig, img: CriuImage): Promise<Touches> {
  const r = await rig.restore(img, true);
  try {
    // The rig has consumed the program's first line ("SAMPLES n"): it belongs in front of the rest.
    const rest = isLatOk(r.firstLine) ? [] : await img.out.waitFor('LAT OK', isLatOk, r.restore.running);
    const touches = parseTouches([r.firstLine, ...rest]);
    await rig.finish(r, true);
    return touches;
  } catch (e) {
    await rig.finish(r).catch(() => undefined);
    throw e;
  }
}

const QUANTILES: Array<[string, number]> = [
  ['p50', 0.5],
  ['p90', 0.9],
  ['p99', 0.99],
  ['max', 1],
];

/** Quantile in µs of ns samples, or null when there are none. */
function us(ns: readonly number[], q: number): number | null {
  return ns.length === 0 ? null : quantile(sorted(ns), q) / 1000;
}

export const criuFaultLatency: Scenario<FaultContext> = {
  name: 'criu-fault-latency',
  title: 'First-touch latency of a restored process: ours vs CRIU lazy-pages',
  description: 'random first touches of a lazily restored process: our page service vs criu lazy-pages ($CRIU)',
  async run(ctx) {
    const rig = criuRig(ctx);
    const label = `${rig.label} lazy-pages`;
    const mib = regionMiB(ctx);
    const count = Math.min(ctx.options.faults ?? (ctx.options.quick ? 5000 : 20_000), (mib * MiB) / PAGE);
    const order = newSeed();
    ctx.log(`criu-fault-latency: ${mib} MiB image; ${count} first touches; ours then ${rig.label}`);
    const d = await ctx.restore.image(mib);
    const image = await attempt(() => rig.image(mib));
    const command = `lat ${order} ${count}`;
    const limit = sourceCache.limitBytes;
    sourceCache.limitBytes = 0;
    let mine: Touches;
    let criu: Attempt<Touches>;
    try {
      ctx.restore.command(d, command);
      mine = await ours(ctx, d);
      if (image.ok) rig.command(image.value, command);
      criu = image.ok
        ? await attempt(() => theirs(rig, image.value))
        : { ok: false, error: `no criu image: ${image.error}` };
    } finally {
      sourceCache.limitBytes = limit;
      ctx.restore.clearCommand(d);
      if (image.ok) rig.clearCommand(image.value);
    }
    const floor = await ctx.rig.session('floor', mib, count, (t) => t.lat(ctx.rig.seed, order, count));
    const resident = (t: Touches) => (100 * (t.ns.length - t.missing.length)) / t.ns.length;
    const figures: Figure[] = [
      vsCriu('touches found resident', '%', 'lower', resident(mine), map(criu, resident), label),
    ];
    const notes: string[] = [];
    const criuMissing = map(criu, (t) => t.missing);
    if (criu.ok && criu.value.missing.length === 0)
      notes.push(`${label}: no touch found its page missing, so no fault latency was measured for criu`);
    if (mine.missing.length === 0)
      notes.push('ours: no touch found its page missing, so no fault latency was measured');
    else {
      for (const [name, q] of QUANTILES)
        figures.push(
          vsCriu(
            `missing: ${name}`,
            'us',
            'lower',
            us(mine.missing, q)!,
            map(criuMissing, (m) => us(m, q)),
            label,
          ),
        );
      figures.push(
        figure('missing: p50 vs C floor', 'us', 'lower', us(mine.missing, 0.5)!, us(floor, 0.5), FLOOR_NAME),
      );
    }
    if (!criu.ok) notes.push(`${label} FAILED: ${criu.error}`);
    const distributions: Distribution[] = [];
    if (mine.missing.length > 0) {
      const others =
        criu.ok && criu.value.missing.length > 0 ? [summarize(`${label} (restored)`, criu.value.missing)] : [];
      distributions.push({
        name: 'criu-fault-latency',
        title: `Restored process, missing pages: ours (store) vs ${label} (${mib} MiB)`,
        ours: summarize('ours (restored, store)', mine.missing),
        reference: summarize('C floor', floor),
        others,
      });
    }
    notes.push(
      'both tools copy the rest of the image in the background during the touches; the latency figures are of the ' +
        'touches whose page mincore(2) found missing just before',
    );
    return {
      params: { regionMiB: mib, faults: count, seed: ctx.rig.seed, orderSeed: order, criuVersion: rig.criu.version },
      figures,
      rounds: [
        { side: 'ours', round: 0, values: { touches: mine.ns.length, missing: mine.missing.length } },
        ...(criu.ok
          ? [{ side: 'criu', round: 0, values: { touches: criu.value.ns.length, missing: criu.value.missing.length } }]
          : []),
      ],
      distributions,
      notes,
    };
  },
};
