/**
 * Background copy throughput: every page of an idle, untouched lazy region
 * copied in by the monitor with 2 MiB UFFDIO_COPYs. Ours is the page
 * service's background copy (from enabling it to the task's `complete`
 * event, which includes one hop to the JS thread); the reference is the C
 * floor's tight UFFDIO_COPY loop. The target verifies every page afterwards.
 */
import { FLOOR_NAME, MiB, PAGE, type Side } from '../lib/fault-rig.js';
import { figure } from '../lib/stats.js';
import type { Scenario } from '../lib/types.js';
import { regionMiB, runRounds, type FaultContext } from './context.js';

const CHUNK = 2 * MiB;

export const backgroundCopy: Scenario<FaultContext> = {
  name: 'background-copy',
  title: 'Background copy throughput',
  description: 'UFFDIO_COPY of a whole lazy region in 2 MiB chunks: page-service background copy vs a C loop',
  async run(ctx) {
    const mib = regionMiB(ctx);
    ctx.log(`background-copy: ${mib} MiB in ${CHUNK / MiB} MiB chunks per round`);
    const { results, records } = await runRounds(
      ctx,
      'background-copy',
      async (side) => {
        const r = await ctx.rig.session(side, mib, (mib * MiB) / PAGE, async (target, monitor) => {
          const copied = await monitor.background(CHUNK);
          await target.check(ctx.rig.seed);
          return copied;
        });
        if (r.bytes !== mib * MiB) throw new Error(`${side}: copied ${r.bytes} bytes of ${mib * MiB}`);
        return r;
      },
      (r) => ({ gbPerSec: r.bytes / r.ns, ms: r.ns / 1e6 }),
    );
    const sum = (side: Side) => ({
      bytes: results[side].reduce((a, r) => a + r.bytes, 0),
      ns: results[side].reduce((a, r) => a + r.ns, 0),
    });
    const ours = sum('ours');
    const floor = sum('floor');
    const n = results.ours.length;
    return {
      params: { regionMiB: mib, chunkBytes: CHUNK },
      figures: [
        figure('throughput', 'GB/s', 'higher', ours.bytes / ours.ns, floor.bytes / floor.ns, FLOOR_NAME),
        figure(`${mib} MiB resident`, 'ms', 'lower', ours.ns / n / 1e6, floor.ns / n / 1e6, FLOOR_NAME),
      ],
      rounds: records,
      distributions: [],
      notes: [],
    };
  },
};
