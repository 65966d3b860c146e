/**
 * Many threads faulting at once: N threads of one target first-touch
 * distinct random pages simultaneously (released by a barrier). The figure is
 * faults per second over the wall time from the first thread's start to the
 * last thread's end; the per-fault latencies under that contention come too.
 */
import { FLOOR_NAME, PAGE, type Side } from '../lib/fault-rig.js';
import { figure, latencyFigures, summarize } from '../lib/stats.js';
import type { Scenario } from '../lib/types.js';
import { regionMiB, runRounds, type FaultContext } from './context.js';

export const faultThreads: Scenario<FaultContext> = {
  name: 'fault-threads',
  title: 'Threads faulting at once',
  description: 'N threads first-touch distinct random pages simultaneously: faults/s, our page service vs the C floor',
  async run(ctx) {
    const mib = regionMiB(ctx);
    const threads = ctx.options.quick ? 4 : 8;
    const wanted = ctx.options.faults ?? (ctx.options.quick ? 4000 : 16_000);
    const each = Math.max(1, Math.floor(Math.min(wanted, (mib << 20) / PAGE) / threads));
    ctx.log(`fault-threads: ${threads} threads x ${each} first touches per round in ${mib} MiB`);
    const { results, records, orders } = await runRounds(
      ctx,
      'fault-threads',
      (side, order) =>
        ctx.rig.session(side, mib, threads * each, (target) => target.threads(ctx.rig.seed, order, threads, each)),
      (r) => ({ faultsPerSec: r.faults / (r.wallNs / 1e9) }),
    );
    const pooled = (side: Side) => ({
      faults: results[side].reduce((a, r) => a + r.faults, 0),
      ns: results[side].reduce((a, r) => a + r.wallNs, 0),
      samples: results[side].flatMap((r) => r.samples),
    });
    const ours = pooled('ours');
    const floor = pooled('floor');
    return {
      params: { regionMiB: mib, threads, faultsPerThread: each, orderSeeds: orders.join(',') },
      figures: [
        figure(
          'faults/s',
          'faults/s',
          'higher',
          ours.faults / (ours.ns / 1e9),
          floor.faults / (floor.ns / 1e9),
          FLOOR_NAME,
        ),
        ...latencyFigures('fault ', ours.samples, floor.samples, FLOOR_NAME).filter((f) => f.name !== 'fault p90'),
      ],
      rounds: records,
      distributions: [
        {
          name: 'fault-threads',
          title: `Fault latency with ${threads} threads faulting at once (${ours.faults} faults, ${mib} MiB)`,
          ours: summarize('ours (page service)', ours.samples),
          reference: summarize('C floor', floor.samples),
        },
      ],
      notes: [],
    };
  },
};
