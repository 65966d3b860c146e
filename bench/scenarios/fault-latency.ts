/**
 * First-touch latency of random pages of a lazy region: each sample is one
 * read of a missing page, timed in the target around the access, so it holds
 * the whole round trip (fault, wake-up of the monitor, read, UFFDIO_COPY,
 * wake-up of the target). The floor and our page service serve the same
 * pages in the same order; their samples are pooled over ABBA rounds.
 */
import { FLOOR_NAME, PAGE } from '../lib/fault-rig.js';
import { figure, latencyFigures, mean, quantile, sorted, summarize } from '../lib/stats.js';
import type { Scenario } from '../lib/types.js';
import { regionMiB, runRounds, type FaultContext } from './context.js';

export const faultLatency: Scenario<FaultContext> = {
  name: 'fault-latency',
  title: 'First-touch fault latency',
  description: 'random first touches of a lazy region, one at a time: our page service vs the C floor',
  async run(ctx) {
    const mib = regionMiB(ctx);
    const count = Math.min(ctx.options.faults ?? (ctx.options.quick ? 5000 : 20_000), (mib << 20) / PAGE);
    ctx.log(`fault-latency: ${count} first touches per round in ${mib} MiB`);
    const { results, records, orders } = await runRounds(
      ctx,
      'fault-latency',
      (side, order) => ctx.rig.session(side, mib, count, (target) => target.lat(ctx.rig.seed, order, count)),
      (ns) => {
        const s = sorted(ns);
        return { p50us: quantile(s, 0.5) / 1000, p99us: quantile(s, 0.99) / 1000 };
      },
    );
    const ours = results.ours.flat();
    const floor = results.floor.flat();
    return {
      params: { regionMiB: mib, faultsPerRound: count, seed: ctx.rig.seed, orderSeeds: orders.join(',') },
      figures: [
        ...latencyFigures('', ours, floor, FLOOR_NAME, { text: 'p50 <= 1.2x floor', max: 1.2 }),
        figure('mean', 'us', 'lower', mean(ours) / 1000, mean(floor) / 1000, FLOOR_NAME),
      ],
      rounds: records,
      distributions: [
        {
          name: 'fault-latency',
          title: `First-touch fault latency: ${ours.length} random pages of a ${mib} MiB lazy region`,
          ours: summarize('ours (page service)', ours),
          reference: summarize('C floor', floor),
        },
      ],
      notes: [],
    };
  },
};
