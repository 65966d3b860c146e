/**
 * A fork storm while lazy: the target first touches scattered pages (so the
 * lazy state a monitor must copy for each child is fragmented, as in a
 * process that has run for a while), then forks children one after the
 * other. With UFFD_EVENT_FORK the parent's fork() blocks until the monitor
 * has read the event, so the time each fork() takes in the parent is how
 * long a forking parent waits. Each child first-touches one more page
 * through its own uffd and verifies it. The same storm without any uffd
 * (the same pages present) shows what the kernel's fork costs by itself.
 */
import { FLOOR_NAME } from '../lib/fault-rig.js';
import { figure, latencyFigures, mean, median, quantile, sorted, summarize } from '../lib/stats.js';
import type { RoundRecord, Scenario } from '../lib/types.js';
import { regionMiB, roundCount, runRounds, type FaultContext } from './context.js';

function forkSummary(ns: number[]): Record<string, number> {
  return { p50us: quantile(sorted(ns), 0.5) / 1000, meanUs: mean(ns) / 1000 };
}

export const forkStorm: Scenario<FaultContext> = {
  name: 'fork-storm',
  title: 'Fork storm while lazy',
  description: 'time of each fork() in a parent whose memory is lazy (UFFD_EVENT_FORK): ours vs the C floor',
  async run(ctx) {
    const mib = regionMiB(ctx);
    const pages = (mib << 20) / 4096;
    const forks = Math.min(100, pages);
    const prefault = Math.min(ctx.options.quick ? 1000 : 2000, pages - forks);
    ctx.log(`fork-storm: ${forks} forks after ${prefault} scattered first touches in ${mib} MiB`);
    const { results, records, orders } = await runRounds(
      ctx,
      'fork-storm',
      (side, order) =>
        ctx.rig.session(side, mib, prefault + forks, (target) =>
          target.forkstorm(ctx.rig.seed, order, forks, prefault),
        ),
      forkSummary,
    );
    const plain: number[] = [];
    const plainRecords: RoundRecord[] = [];
    for (let round = 0; round < roundCount(ctx); round++) {
      const ns = await ctx.rig.plainSession(mib, prefault + forks, (t) =>
        t.forkstorm(ctx.rig.seed, orders[round]!, forks, prefault),
      );
      plain.push(...ns);
      plainRecords.push({ side: 'no uffd', round, values: forkSummary(ns) });
      ctx.log(`fork-storm: no uffd round ${round + 1}: mean ${(mean(ns) / 1000).toFixed(0)} us`);
    }
    const ours = results.ours.flat();
    const floor = results.floor.flat();
    const stormMs = (ns: number[][]) => median(ns.map((r) => r.reduce((a, b) => a + b, 0) / 1e6));
    const p = sorted(plain);
    return {
      params: {
        regionMiB: mib,
        forks,
        prefaultPages: prefault,
        orderSeeds: orders.join(','),
        noUffdForkP50us: quantile(p, 0.5) / 1000,
        noUffdForkMeanUs: mean(plain) / 1000,
      },
      figures: [
        ...latencyFigures('fork() ', ours, floor, FLOOR_NAME).filter((f) => f.name !== 'fork() p90'),
        figure('fork() mean', 'us', 'lower', mean(ours) / 1000, mean(floor) / 1000, FLOOR_NAME),
        figure(
          `${forks} forks, median total`,
          'ms',
          'lower',
          stormMs(results.ours),
          stormMs(results.floor),
          FLOOR_NAME,
        ),
      ],
      rounds: [...records, ...plainRecords],
      distributions: [
        {
          name: 'fork-storm',
          title: `Time of fork() in a lazy parent (${ours.length} forks, ${prefault} pages present, ${mib} MiB)`,
          ours: summarize('ours (page service)', ours),
          reference: summarize('C floor', floor),
        },
      ],
      notes: [
        `without any userfaultfd (same pages present, no monitor) fork() takes p50 ${(quantile(p, 0.5) / 1000).toFixed(0)} us, ` +
          `mean ${(mean(plain) / 1000).toFixed(0)} us: the kernel's own fork cost, which both monitors add to`,
      ],
    };
  },
};
