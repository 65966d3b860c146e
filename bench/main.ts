#!/usr/bin/env node
/**
 * `npm run bench`: lazyrestore's benchmarks, each side by side with a C
 * reference built and measured in the same run. Prints a table; writes
 * `<out>/<timestamp>.json` (every figure, the machine) and, next to it,
 * `<timestamp>.svg` (the latency distributions, ours against the floor).
 * See docs/benchmarks.md.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { native } from '../native/index.js';
import { Criu } from './lib/criu.js';
import { CriuRig } from './lib/criu-rig.js';
import { FaultRig } from './lib/fault-rig.js';
import { machineInfo } from './lib/machine.js';
import { killAll, killAllNow } from './lib/process.js';
import { buildReference } from './lib/reference.js';
import { RestoreRig } from './lib/restore-rig.js';
import { renderSvg } from './lib/svg.js';
import { renderTable, type TableRow } from './lib/table.js';
import type { BenchOptions, ScenarioResult } from './lib/types.js';
import type { FaultContext } from './scenarios/context.js';
import { criuPath, groups, planned, scenarios } from './scenarios/index.js';

// From dist/bench back to the checkout root.
const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export type ScenarioReport =
  | ({ name: string; title: string; description: string; ok: true; seconds: number } & ScenarioResult)
  | { name: string; title: string; description: string; ok: false; seconds: number; error: string };

function selectScenarios(only: string | undefined): typeof scenarios {
  if (!only) return scenarios;
  const names = only
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .flatMap((name) => {
      const members = groups[name];
      // A group of scenarios that are all planned is refused under its own name.
      if (members && members.some((m) => scenarios.some((s) => s.name === m))) return members;
      return [name];
    });
  return names.map((name) => {
    const s = scenarios.find((x) => x.name === name);
    if (s) return s;
    const p = planned.find((x) => x.name === name || groups[name]?.includes(x.name));
    if (p) throw new Error(`scenario '${name}' is not measured: it needs ${p.needs}`);
    throw new Error(`unknown scenario '${name}' (known: ${scenarios.map((x) => x.name).join(', ')})`);
  });
}

/** The fault scenarios need a privileged uffd and pidfd_getfd: say which is missing. */
function preflight(): void {
  if (process.getuid?.() !== 0)
    throw new Error('the benchmarks must run as root (privileged userfaultfd, pidfd_getfd)');
  try {
    native.uffdProbe();
  } catch (e) {
    throw new Error(`userfaultfd is unavailable: ${(e as Error).message}`);
  }
  if (typeof native.pidfdGetfd !== 'function') throw new Error('the native addon lacks pidfdGetfd');
}

function positiveInt(name: string, v: number | undefined): number | undefined {
  if (v !== undefined && (!Number.isInteger(v) || v <= 0)) throw new Error(`--${name} must be a positive integer`);
  return v;
}

export async function main(argv: string[]): Promise<number> {
  const args = await yargs(argv)
    .scriptName('bench')
    .usage('$0 [options]   (npm run bench -- [options])')
    .option('quick', { type: 'boolean', default: false, describe: 'a reduced set that runs in under two minutes' })
    .option('json', { type: 'boolean', default: false, describe: 'print the JSON report on stdout (table on stderr)' })
    .option('out', { type: 'string', default: 'bench-results', describe: 'directory for the JSON and SVG' })
    .option('only', { type: 'string', describe: 'comma-separated scenario names' })
    .option('list', { type: 'boolean', default: false, describe: 'list the scenarios and exit' })
    .option('mib', { type: 'number', describe: 'region size of the fault scenarios in MiB (smoke tests)' })
    .option('faults', { type: 'number', describe: 'timed faults per round (smoke tests)' })
    .strict()
    .help()
    .wrap(null)
    .parseAsync();

  if (args.list) {
    for (const s of scenarios) console.log(`${s.name.padEnd(20)} ${s.description}`);
    for (const p of planned) console.log(`${p.name.padEnd(20)} (not measured: needs ${p.needs}) ${p.description}`);
    return 0;
  }
  const options: BenchOptions = {
    quick: args.quick,
    mib: positiveInt('mib', args.mib),
    faults: positiveInt('faults', args.faults),
  };
  const selected = selectScenarios(args.only);
  preflight();
  const log = (m: string) => process.stderr.write(`bench: ${m}\n`);
  log('building bench/reference');
  const bins = buildReference(repoRoot);
  const launcher = join(repoRoot, 'test', 'programs', 'bin', 'restore_launch');
  // A $CRIU that is not a runnable criu is an environment error, found before anything is measured.
  const path = criuPath();
  const wantsCriu = path !== null && selected.some((s) => groups['criu']!.includes(s.name));
  const criu = wantsCriu ? new CriuRig(await Criu.open(path), bins.restoreWorkload, launcher, log) : null;
  if (criu) log(`comparing with ${criu.label} (${path})`);
  const rig = new FaultRig(bins);
  const restore = new RestoreRig(bins.restoreWorkload, launcher, join(repoRoot, 'dist', 'cli', 'main.js'), log);
  const ctx: FaultContext = { options, log, rig, restore, criu };
  const machine = machineInfo(repoRoot);
  const startedAt = new Date();

  const reports: ScenarioReport[] = [];
  for (const s of selected) {
    const t0 = Date.now();
    const head = { name: s.name, title: s.title, description: s.description };
    try {
      const r = await s.run(ctx);
      reports.push({ ...head, ok: true, seconds: (Date.now() - t0) / 1000, ...r });
    } catch (e) {
      const error = e instanceof Error ? e.message : String(e);
      log(`${s.name} FAILED: ${error}`);
      reports.push({ ...head, ok: false, seconds: (Date.now() - t0) / 1000, error });
    }
  }
  await killAll();
  await rig.close();
  await restore.close();
  criu?.close();

  const finishedAt = new Date();
  const outDir = resolve(args.out);
  mkdirSync(outDir, { recursive: true });
  const stamp = startedAt.toISOString().replace(/[:.]/g, '-');
  const jsonPath = join(outDir, `${stamp}.json`);
  const distributions = reports.flatMap((r) => (r.ok ? r.distributions : []));
  const svgPath = distributions.length > 0 ? join(outDir, `${stamp}.svg`) : null;
  const report = {
    tool: 'lazyrestore bench',
    schema: 1,
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    // null, not undefined, so every option appears in the JSON.
    options: { quick: options.quick, mib: options.mib ?? null, faults: options.faults ?? null },
    machine: { ...machine, loadavgEnd: loadavg().map((v) => Number(v.toFixed(2))) },
    svg: svgPath,
    // The criu the criu-* scenarios ran (null without $CRIU or when none was selected).
    criu: criu ? { path: criu.criu.path, version: criu.criu.version } : null,
    scenarios: reports,
    planned,
  };
  const json = JSON.stringify(report, null, 2) + '\n';
  writeFileSync(jsonPath, json);
  if (svgPath) {
    const sub =
      `${startedAt.toISOString()} · Linux ${machine.kernel} · ${machine.cpuModel} x${machine.cores} · ` +
      `node ${machine.node} · ${machine.git.commit?.slice(0, 12) ?? 'no git'}${machine.git.dirty ? '+dirty' : ''}` +
      ` · load ${machine.loadavg[0]}`;
    const heading = distributions.some((d) => (d.others ?? []).length > 0)
      ? 'lazyrestore fault service: ours vs the C floor and CRIU'
      : 'lazyrestore fault service: ours vs the C floor';
    writeFileSync(svgPath, renderSvg(distributions, heading, sub));
  }

  const rows: TableRow[] = reports.flatMap((r) =>
    r.ok ? r.figures.map((figure) => ({ scenario: r.name, figure })) : [],
  );
  const lines = [renderTable(rows)];
  for (const r of reports) {
    if (r.ok) lines.push(...r.notes.map((n) => `${r.name}: ${n}`));
    else lines.push(`${r.name}: FAILED: ${r.error}`);
  }
  for (const p of planned) lines.push(`${p.name}: not measured: needs ${p.needs}`);
  lines.push(`load average ${machine.loadavg.join(' ')} at start, ${report.machine.loadavgEnd.join(' ')} at end`);
  lines.push(`wrote ${jsonPath}${svgPath ? ` and ${svgPath}` : ''}`);
  if (args.json) {
    process.stderr.write(lines.join('\n') + '\n');
    process.stdout.write(json);
  } else {
    process.stdout.write(lines.join('\n') + '\n');
  }
  return reports.every((r) => r.ok) ? 0 : 1;
}

process.on('exit', killAllNow);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    killAllNow();
    process.exit(130);
  });
}

main(hideBin(process.argv)).then(
  (code) => {
    process.exitCode = code;
    // A page service that failed to let go must not keep the run alive.
    setTimeout(() => process.exit(code), 5000).unref();
  },
  (e: unknown) => {
    process.stderr.write(`bench: ${e instanceof Error ? e.message : String(e)}\n`);
    killAllNow();
    process.exit(2);
  },
);
