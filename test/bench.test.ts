/**
 * `npm run bench` in a tiny mode: every scenario on a 16 MiB region with a
 * few hundred faults (restore-latency: 16 and 32 MiB images). Functional only: the run must succeed (the target
 * verifies every page either monitor delivered), and the JSON and SVG must
 * hold what docs/benchmarks.md promises. No figure's value is asserted.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { benchMain, runBench, usable } from './support/bench.js';

interface FigureJson {
  name: string;
  unit: string;
  better: string;
  ours: number;
  reference: number | null;
  ratio: number | null;
  target: { text: string; met: boolean } | null;
}
interface SummaryJson {
  label: string;
  count: number;
  unit: string;
  cdf: Array<[number, number]>;
}
interface ScenarioJson {
  name: string;
  ok: boolean;
  error?: string;
  figures: FigureJson[];
  rounds: Array<{ side: string; round: number; values: Record<string, number> }>;
  distributions: Array<{ name: string; ours: SummaryJson; reference: SummaryJson; others?: SummaryJson[] }>;
}
interface ReportJson {
  tool: string;
  machine: {
    kernel: string;
    cpuModel: string;
    cores: number;
    memoryBytes: number;
    node: string;
    git: { commit: string | null };
    loadavg: number[];
  };
  svg: string | null;
  scenarios: ScenarioJson[];
  planned: Array<{ name: string; needs: string }>;
}

function assertCdf(s: SummaryJson, count: number): void {
  assert.equal(s.unit, 'us');
  assert.equal(s.count, count);
  assert.ok(s.cdf.length > 10);
  for (let i = 1; i < s.cdf.length; i++) {
    assert.ok(s.cdf[i]![0] >= s.cdf[i - 1]![0], `${s.label}: latencies ascend`);
    assert.ok(s.cdf[i]![1] > s.cdf[i - 1]![1], `${s.label}: fractions ascend`);
  }
  assert.equal(s.cdf.at(-1)![1], 1);
}

/** The dump and restore scenarios: the figures docs/benchmarks.md describes, and what the engine reported. */
function assertRestoreScenarios(byName: Map<string, ScenarioJson>): void {
  const names = (s: string) => byName.get(s)!.figures.map((f) => f.name);
  const restore = byName.get('restore-latency')!;
  for (const mib of [16, 32]) {
    for (const what of [
      'lazy: running (engine)',
      'lazy: program ran',
      'lazy: CLI until program ran',
      'eager: running (engine)',
    ])
      assert.ok(names('restore-latency').includes(`${mib} MiB ${what}`), `${mib} MiB ${what}`);
  }
  const running = restore.figures.find((f) => f.name === '16 MiB lazy: running (engine)')!;
  assert.equal(running.target?.met, running.ratio! <= 1);
  assert.ok(restore.figures.some((f) => f.name === 'lazy running 32/16 MiB' && f.unit === 'x'));
  // Eager wrote everything before the tree ran, lazy did not: the eager rounds exist beside the lazy ones.
  assert.ok(restore.rounds.some((r) => r.side === 'eager 32 MiB'));

  const resident = byName.get('residency')!;
  assert.deepEqual(
    resident.rounds.map((r) => r.side),
    ['store', 'memory', 'eager', 'floor'],
  );
  // The second lazy restore was served from the source cache.
  assert.ok(resident.rounds[1]!.values['cachedBytes']! >= 15 << 20);

  const store = byName.get('fault-latency-store')!;
  for (const side of ['store', 'memory'])
    assert.ok(names('fault-latency-store').includes(`${side}: touches found resident`), side);
  for (const d of store.distributions) assert.equal(d.reference.count, 400);

  const dump = byName.get('dump')!;
  const tree = dump.rounds.find((r) => r.side === '16 MiB + 8 children')!;
  // Nine processes share one region copy-on-write: the store keeps it about once.
  assert.ok(tree.values['bytes']! >= 9 * (16 << 20), `bytes ${tree.values['bytes']}`);
  assert.ok(tree.values['bytesStored']! < 2 * (17 << 20), `stored ${tree.values['bytesStored']}`);
}

test('a tiny run of every scenario writes a complete JSON report and an SVG next to it', async (t) => {
  if (!usable(t)) return;
  const out = mkdtempSync(join(tmpdir(), 'lazyrestore-bench-'));
  try {
    const run = await runBench(['--quick', '--mib', '16', '--faults', '400', '--json', '--out', out]);
    assert.equal(run.code, 0, run.stderr);
    const report = JSON.parse(run.stdout) as ReportJson;
    assert.equal(report.tool, 'lazyrestore bench');
    assert.ok(report.machine.kernel.length > 0);
    assert.ok(report.machine.cpuModel.length > 0);
    assert.ok(report.machine.cores >= 1);
    assert.ok(report.machine.memoryBytes > 0);
    assert.equal(report.machine.node, process.version);
    assert.equal(report.machine.loadavg.length, 3);
    assert.ok('commit' in report.machine.git);

    const byName = new Map(report.scenarios.map((s) => [s.name, s]));
    const faultScenarios = ['fault-latency', 'fault-threads', 'fork-storm', 'background-copy'];
    assert.deepEqual(
      [...byName.keys()],
      [...faultScenarios, 'fault-latency-store', 'restore-latency', 'residency', 'dump'],
    );
    for (const s of report.scenarios) {
      assert.equal(s.ok, true, `${s.name}: ${s.error}`);
      assert.ok(s.figures.length > 0);
      for (const f of s.figures) {
        assert.ok(Number.isFinite(f.ours) && f.ours >= 0, `${s.name} ${f.name}: measured`);
        if (f.reference !== null)
          assert.ok(
            f.ratio !== null && Math.abs(f.ratio - f.ours / f.reference) <= 0.01 * f.ratio,
            'ratio is ours/ref',
          );
        else assert.equal(f.ratio, null);
        assert.ok(f.better === 'lower' || f.better === 'higher');
      }
      if (!faultScenarios.includes(s.name)) continue;
      for (const f of s.figures)
        assert.ok(f.ours > 0 && f.reference !== null && f.reference > 0, `${s.name} ${f.name}: both sides measured`);
      // Both sides ran the same number of rounds.
      const sides = s.rounds.map((r) => r.side);
      assert.equal(sides.filter((x) => x === 'ours').length, sides.filter((x) => x === 'floor').length);
    }

    const lat = byName.get('fault-latency')!;
    assert.deepEqual(
      lat.figures.map((f) => [f.name, f.unit]),
      [
        ['p50', 'us'],
        ['p90', 'us'],
        ['p99', 'us'],
        ['max', 'us'],
        ['mean', 'us'],
      ],
    );
    const p50 = lat.figures[0]!;
    assert.equal(typeof p50.target?.met, 'boolean');
    assert.equal(p50.target?.met, p50.ratio! <= 1.2);
    const faultRounds = lat.rounds.filter((r) => r.side === 'ours').length;
    assert.equal(lat.distributions.length, 1);
    assertCdf(lat.distributions[0]!.ours, 400 * faultRounds);
    assertCdf(lat.distributions[0]!.reference, 400 * faultRounds);
    assert.ok(byName.get('fault-threads')!.figures.some((f) => f.name === 'faults/s' && f.better === 'higher'));
    assert.ok(byName.get('fork-storm')!.rounds.some((r) => r.side === 'no uffd'));
    assert.ok(byName.get('background-copy')!.figures.some((f) => f.unit === 'GB/s'));
    assertRestoreScenarios(byName);
    // Without $CRIU the criu-* scenarios are named as not measured, not dropped.
    assert.deepEqual(
      report.planned.map((p) => p.name),
      ['criu-dump', 'criu-restore', 'criu-fault-latency'],
    );
    for (const p of report.planned) assert.match(p.needs, /\$CRIU/);

    // The same report is on disk, with the SVG beside it.
    assert.ok(report.svg);
    assert.equal(dirname(report.svg), out);
    const json = readFileSync(report.svg.replace(/\.svg$/, '.json'), 'utf8');
    assert.deepEqual(JSON.parse(json), report);
    const svg = readFileSync(report.svg, 'utf8');
    assert.match(svg, /^<\?xml[^>]*>\s*<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.match(svg, /<\/svg>\s*$/);
    // One panel per distribution, each with two curves (ours and the floor) and one per further series.
    const panels = report.scenarios.flatMap((s) => s.distributions);
    const curves = panels.reduce((n, d) => n + 2 + (d.others?.length ?? 0), 0);
    assert.equal(svg.match(/<polyline /g)?.length, curves);
    assert.match(run.stderr, /fault-latency +p50/, 'the table goes to stderr with --json');
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('scenario selection refuses unknown names and names what planned ones need', async (t) => {
  if (!existsSync(benchMain)) {
    t.skip('dist/bench/main.js is not built');
    return;
  }
  const unknown = await runBench(['--only', 'no-such-scenario']);
  assert.notEqual(unknown.code, 0);
  assert.match(unknown.stderr, /unknown scenario 'no-such-scenario' \(known: fault-latency, /);
  const planned = await runBench(['--only', 'criu']);
  assert.notEqual(planned.code, 0);
  assert.match(planned.stderr, /scenario 'criu' is not measured: it needs \$CRIU to name a criu binary/);
  const one = await runBench(['--only', 'fault-latency,criu-dump']);
  assert.notEqual(one.code, 0);
  assert.match(one.stderr, /scenario 'criu-dump' is not measured: it needs \$CRIU/);
});
