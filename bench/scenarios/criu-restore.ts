/**
 * Restore until the program runs and until it has verified all its memory,
 * by lazyrestore and by the criu of $CRIU, in the same run, of the same
 * workload (1 GiB; 256 MiB with --quick). The workload is told `check`
 * before it is restored, so the moment it runs it starts reading every page:
 * the first stamp of the check is "program ran", its last "verified".
 *
 * - lazy: ours `restoreImage()` from the store (nothing cached); criu
 *   `criu restore --lazy-pages` served by a `criu lazy-pages` daemon from
 *   its image files. The daemon is started (and listening) before the clock
 *   starts, as a restore service would be; its start-up is a note.
 * - eager: ours `--eager`; criu `criu restore` (all memory before it runs).
 * - ours also through the CLI (`node dist/cli/main.js restore`), the figure
 *   that is a command like criu's.
 * - complete: ours `RestoreCompletion.completeMs`; criu the exit of the
 *   lazy-pages daemon, which leaves once every page is placed.
 *
 * Lazy rounds alternate ours and criu (ABBA); eager runs once per tool.
 */
import { sourceCache } from '../../daemon/restore/index.js';
import { attempt, map, vsCriu, type Attempt } from '../lib/criu-figures.js';
import type { CriuImage, CriuRig } from '../lib/criu-rig.js';
import type { Dumped } from '../lib/restore-rig.js';
import { median } from '../lib/stats.js';
import type { Figure, RatioTarget, RoundRecord, Scenario } from '../lib/types.js';
import { criuRig, type FaultContext } from './context.js';

interface Verified {
  ranMs: number;
  verifiedMs: number;
  /** Every page placed; null for criu's eager restore (no daemon: all placed before it ran). */
  completeMs: number | null;
  /** criu lazy: the lazy-pages daemon's start-up until it listened (before the clock started). */
  daemonStartMs: number | null;
}

/** A round's record: the figures that exist. */
function values(v: Verified): Record<string, number> {
  return Object.fromEntries(Object.entries(v).filter((e): e is [string, number] => e[1] !== null));
}

/** "CHECK OK <start> <end>" -> [start, end]; a first TICK line (restored mid-loop) only delays the check. */
function checkStamps(lines: readonly string[]): [bigint, bigint] {
  const ok = lines.find((l) => l.startsWith('CHECK OK'));
  if (!ok) throw new Error(`restore_workload: no CHECK OK in ${lines.join(' | ')}`);
  const [, , start, end] = ok.split(' ');
  return [BigInt(start!), BigInt(end!)];
}

async function ours(ctx: FaultContext, d: Dumped, eager: boolean): Promise<Verified> {
  ctx.restore.forget(d.result.id);
  const { t0, tree } = await ctx.restore.restore(d, eager);
  try {
    const [start, end] = checkStamps(await d.out.waitFor('CHECK OK', (l) => l.startsWith('CHECK OK')));
    await tree.complete;
    const done = await ctx.restore.finish(tree);
    const ms = (ns: bigint) => Number(ns - t0) / 1e6;
    return { ranMs: ms(start), verifiedMs: ms(end), completeMs: done.completeMs, daemonStartMs: null };
  } catch (e) {
    await ctx.restore.finish(tree).catch(() => undefined);
    throw e;
  }
}

async function theirs(rig: CriuRig, img: CriuImage, lazy: boolean): Promise<Verified> {
  const r = await rig.restore(img, lazy);
  try {
    const lines = r.firstLine.startsWith('CHECK')
      ? [r.firstLine]
      : await img.out.waitFor('CHECK OK', (l) => l.startsWith('CHECK OK'), r.restore.running);
    const [start, end] = checkStamps(lines);
    await rig.finish(r, true);
    return {
      ranMs: rig.msAfterT0(r, start),
      verifiedMs: rig.msAfterT0(r, end),
      completeMs: r.completeMs,
      daemonStartMs: r.daemonStartMs,
    };
  } catch (e) {
    await rig.finish(r).catch(() => undefined);
    throw e;
  }
}

const show = (v: Verified) =>
  `ran ${v.ranMs.toFixed(1)} ms, verified ${v.verifiedMs.toFixed(0)} ms` +
  (v.completeMs === null ? '' : `, complete ${v.completeMs.toFixed(0)} ms`);

function medianOf(vs: Attempt<Verified[]>, pick: (v: Verified) => number | null): Attempt<number | null> {
  return map(vs, (list) => {
    const values = list.map(pick).filter((v): v is number => v !== null);
    return values.length > 0 ? median(values) : null;
  });
}

export const criuRestore: Scenario<FaultContext> = {
  name: 'criu-restore',
  title: 'Restore until running and until verified: ours vs CRIU',
  description: 'lazy and eager restore until the program runs and until it verified all memory: ours vs criu ($CRIU)',
  async run(ctx) {
    const rig = criuRig(ctx);
    const mib = ctx.options.mib ?? (ctx.options.quick ? 256 : 1024);
    const n = ctx.options.quick ? 2 : 3;
    const label = rig.label;
    ctx.log(`criu-restore: ${mib} MiB, ${n} lazy rounds each, ours and ${label}`);
    const d = await ctx.restore.image(mib);
    const image = await attempt(() => rig.image(mib));
    const records: RoundRecord[] = [];
    const oursLazy: Verified[] = [];
    const criuLazy: Verified[] = [];
    let criuError: string | null = image.ok ? null : `no criu image: ${image.error}`;
    const cli: number[] = [];
    let oursEager: Verified;
    let criuEager: Attempt<Verified>;
    const limit = sourceCache.limitBytes;
    // Nothing cached: every lazy restore of ours reads the store, as criu's reads its image files.
    sourceCache.limitBytes = 0;
    ctx.restore.command(d, 'check');
    if (image.ok) rig.command(image.value, 'check');
    try {
      const runOurs = async (round: number) => {
        const v = await ours(ctx, d, false);
        oursLazy.push(v);
        records.push({ side: 'ours lazy', round, values: values(v) });
        ctx.log(`criu-restore: ours lazy round ${round + 1}/${n}: ${show(v)}`);
      };
      const runCriu = async (round: number) => {
        if (!image.ok || criuError) return;
        const v = await attempt(() => theirs(rig, image.value, true));
        if (!v.ok) {
          // The first failure is the result; repeating it would only repeat criu's words.
          criuError = v.error;
          ctx.log(`criu-restore: ${label} lazy FAILED: ${v.error}`);
          return;
        }
        criuLazy.push(v.value);
        records.push({ side: 'criu lazy', round, values: values(v.value) });
        ctx.log(`criu-restore: ${label} lazy round ${round + 1}/${n}: ${show(v.value)}`);
      };
      for (let round = 0; round < n; round++) {
        const pair = round % 2 === 0 ? [runOurs, runCriu] : [runCriu, runOurs];
        for (const run of pair) await run(round);
      }
      oursEager = await ours(ctx, d, true);
      records.push({ side: 'ours eager', round: 0, values: values(oursEager) });
      ctx.log(`criu-restore: ours eager: ${show(oursEager)}`);
      criuEager = image.ok
        ? await attempt(() => theirs(rig, image.value, false))
        : { ok: false, error: criuError ?? 'no criu image' };
      if (criuEager.ok) {
        records.push({ side: 'criu eager', round: 0, values: values(criuEager.value) });
        ctx.log(`criu-restore: ${label} eager: ${show(criuEager.value)}`);
      } else ctx.log(`criu-restore: ${label} eager FAILED: ${criuEager.error}`);
      // The CLI restore watches for TICK lines: no command for these.
      ctx.restore.clearCommand(d);
      for (let round = 0; round < n; round++) {
        const { programMs } = await ctx.restore.restoreCli(d, false);
        cli.push(programMs);
        records.push({ side: 'ours cli lazy', round, values: { programMs } });
        ctx.log(`criu-restore: ours lazy CLI round ${round + 1}/${n}: program ran after ${programMs.toFixed(1)} ms`);
      }
    } finally {
      sourceCache.limitBytes = limit;
      ctx.restore.clearCommand(d);
      if (image.ok) rig.clearCommand(image.value);
    }
    const lazy: Attempt<Verified[]> = criuError ? { ok: false, error: criuError } : { ok: true, value: criuLazy };
    const m = (list: Verified[], pick: (v: Verified) => number) => median(list.map(pick));
    const eagerCriu = (pick: (v: Verified) => number | null) => map(criuEager, pick);
    // [figure, ours, criu, the target]: every figure in ms, lower is better.
    const rows: Array<[string, number, Attempt<number | null>, RatioTarget?]> = [
      ['lazy: program ran', m(oursLazy, (v) => v.ranMs), medianOf(lazy, (v) => v.ranMs)],
      ['lazy: command until program ran', median(cli), medianOf(lazy, (v) => v.ranMs)],
      [
        'lazy: verified',
        m(oursLazy, (v) => v.verifiedMs),
        medianOf(lazy, (v) => v.verifiedMs),
        { text: '< CRIU', max: 1 },
      ],
      ['lazy: complete', m(oursLazy, (v) => v.completeMs ?? 0), medianOf(lazy, (v) => v.completeMs)],
      ['eager: program ran', oursEager.ranMs, eagerCriu((v) => v.ranMs)],
      ['eager: verified', oursEager.verifiedMs, eagerCriu((v) => v.verifiedMs)],
    ];
    const figures: Figure[] = rows.map(([name, o, c, target]) =>
      vsCriu(`${mib} MiB ${name}`, 'ms', 'lower', o, c, label, target),
    );
    const notes = [
      'lazy figures are medians of the rounds; "program ran" is the first stamp of the check, "verified" its last, ' +
        "criu's moved back onto the bench's clock from the restored program's time namespace",
      'command until program ran: ours is the spawn of `node dist/cli/main.js restore` (Node start-up included), ' +
        "criu's the spawn of `criu restore --lazy-pages` with its lazy-pages daemon already listening",
    ];
    const starts = criuLazy.map((v) => v.daemonStartMs).filter((v): v is number => v !== null);
    if (starts.length > 0)
      notes.push(`criu lazy-pages took ${median(starts).toFixed(1)} ms (median) from its spawn until it listened`);
    if (criuError) notes.push(`${label} lazy restore FAILED: ${criuError}`);
    if (!criuEager.ok && criuEager.error !== criuError) notes.push(`${label} eager restore FAILED: ${criuEager.error}`);
    return {
      params: { regionMiB: mib, lazyRounds: n, criu: rig.criu.path, criuVersion: rig.criu.version },
      figures,
      rounds: records,
      distributions: [],
      notes,
    };
  },
};
