/**
 * Dump of one process with N MiB of populated anonymous memory (1 GiB; 256
 * MiB with --quick), by lazyrestore and by the criu of $CRIU, in the same
 * run. Ours is the dump the other scenarios share (ctx.restore.image), so it
 * is reported here and in `dump` alike. criu's total is the wall time of the
 * `criu dump` command; its frozen and memory times are the ones it prints
 * with --display-stats. Bytes: ours is what the dump added to the store,
 * criu's is every file of its images directory.
 */
import { attempt, map, vsCriu } from '../lib/criu-figures.js';
import type { RoundRecord, Scenario } from '../lib/types.js';
import { criuRig, type FaultContext } from './context.js';

const fmt = (ms: number | null) => (ms === null ? '?' : ms.toFixed(0));

export const criuDump: Scenario<FaultContext> = {
  name: 'criu-dump',
  title: 'Dump: ours vs CRIU',
  description: 'dump total and frozen time and bytes written of one N MiB process: ours vs criu dump ($CRIU)',
  async run(ctx) {
    const criu = criuRig(ctx);
    const mib = ctx.options.mib ?? (ctx.options.quick ? 256 : 1024);
    ctx.log(`criu-dump: ${mib} MiB, ours then ${criu.label}`);
    const ours = (await ctx.restore.image(mib)).result;
    const theirs = await attempt(async () => (await criu.image(mib)).dump);
    const rounds: RoundRecord[] = [
      { side: 'ours', round: 0, values: { totalMs: ours.totalMs, frozenMs: ours.frozenMs, bytes: ours.bytesStored } },
    ];
    if (theirs.ok) {
      const d = theirs.value;
      const values: Record<string, number> = { totalMs: d.totalMs, pageBytes: d.pageBytes, imageBytes: d.imageBytes };
      if (d.frozenMs !== null) values['frozenMs'] = d.frozenMs;
      if (d.memdumpMs !== null) values['memdumpMs'] = d.memdumpMs;
      if (d.memwriteMs !== null) values['memwriteMs'] = d.memwriteMs;
      rounds.push({ side: 'criu', round: 0, values });
    }
    const MiB = 2 ** 20;
    const label = criu.label;
    return {
      params: { regionMiB: mib, criu: criu.criu.path, criuVersion: criu.criu.version },
      figures: [
        vsCriu(
          `${mib} MiB: total`,
          'ms',
          'lower',
          ours.totalMs,
          map(theirs, (d) => d.totalMs),
          label,
          // The target for the dump.
          { text: 'within 2x CRIU', max: 2 },
        ),
        vsCriu(
          `${mib} MiB: frozen`,
          'ms',
          'lower',
          ours.frozenMs,
          map(theirs, (d) => d.frozenMs),
          label,
        ),
        vsCriu(
          `${mib} MiB: page data`,
          'MiB',
          'lower',
          ours.bytes / MiB,
          map(theirs, (d) => d.pageBytes / MiB),
          label,
        ),
        vsCriu(
          `${mib} MiB: bytes written`,
          'MiB',
          'lower',
          ours.bytesStored / MiB,
          map(theirs, (d) => d.imageBytes / MiB),
          label,
        ),
      ],
      rounds,
      distributions: [],
      notes: [
        theirs.ok
          ? `${label}: dump ${theirs.value.totalMs.toFixed(0)} ms; by its --display-stats: frozen ` +
            `${fmt(theirs.value.frozenMs)} ms, memory dump ${fmt(theirs.value.memdumpMs)} ms, memory write ` +
            `${fmt(theirs.value.memwriteMs)} ms (these two overlap)`
          : `${label} dump FAILED: ${theirs.error}`,
        'both tools kill the dumped process at the end, so both keep it frozen until the pages are written; ' +
          'ours writes a LevelDB store, criu plain image files on the same file system',
      ],
    };
  },
};
