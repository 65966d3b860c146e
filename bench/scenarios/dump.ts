/**
 * Dump of a running process into the LevelDB store: total time, how long the
 * tree was frozen, bytes of page data, bytes stored and the dedup ratio. Two
 * workloads: one process with a big patterned region (every page differs),
 * and a parent with 8 forked children sharing its region copy-on-write (the
 * store keeps one copy). Reference: CRIU's quoted 2.2 s for 1 GiB.
 */
import { CRIU_DUMP_1G_MS, QUOTED_DUMP } from '../lib/restore-figures.js';
import { figure } from '../lib/stats.js';
import type { Figure, RoundRecord, Scenario } from '../lib/types.js';
import type { FaultContext } from './context.js';

const CHILDREN = 8;

export const dumpScenario: Scenario<FaultContext> = {
  name: 'dump',
  title: 'Dump',
  description: 'dump total and freeze time, bytes stored and dedup ratio: one big process, a parent with 8 children',
  async run(ctx) {
    const mib = ctx.options.mib ?? (ctx.options.quick ? 256 : 1024);
    const treeMib = ctx.options.mib ?? (ctx.options.quick ? 64 : 256);
    const figures: Figure[] = [];
    const rounds: RoundRecord[] = [];
    for (const [label, size, children] of [
      [`${mib} MiB`, mib, 0],
      [`${treeMib} MiB + ${CHILDREN} children`, treeMib, CHILDREN],
    ] as const) {
      ctx.log(`dump: ${label}`);
      const r = (await ctx.restore.image(size, children)).result;
      if (r.processes !== children + 1) throw new Error(`dump of ${label}: ${r.processes} processes`);
      rounds.push({
        side: label,
        round: 0,
        values: { totalMs: r.totalMs, frozenMs: r.frozenMs, bytes: r.bytes, bytesStored: r.bytesStored },
      });
      const criu = size === 1024 && children === 0 ? CRIU_DUMP_1G_MS : null;
      figures.push(
        figure(
          `${label}: total`,
          'ms',
          'lower',
          r.totalMs,
          criu,
          criu ? QUOTED_DUMP : null,
          criu ? { text: 'within 2x CRIU', max: 2 } : undefined,
        ),
        figure(`${label}: frozen`, 'ms', 'lower', r.frozenMs, null, null),
        figure(`${label}: page data`, 'MiB', 'lower', r.bytes / 2 ** 20, null, null),
        figure(`${label}: stored`, 'MiB', 'lower', r.bytesStored / 2 ** 20, null, null),
        figure(`${label}: dedup ratio`, 'x', 'higher', r.dedupRatio ?? 0, null, null),
      );
    }
    return {
      params: { regionMiB: mib, treeMiB: treeMib, children: CHILDREN },
      figures,
      rounds,
      distributions: [],
      notes: [
        'one dump per workload, shared with the restore scenarios (whichever runs first dumps it); every workload has ' +
          'its own seed, so the store dedups only within an image',
        `the CRIU reference is quoted (${QUOTED_DUMP}), compared only for the 1 GiB process`,
      ],
    };
  },
};
