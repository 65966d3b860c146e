/**
 * The criu-* scenarios of the bench, run for real: a $CRIU that is not a
 * criu is refused before anything is measured, and with a real criu (the
 * test's $CRIU, else /usr/sbin/criu when installed) every figure either has
 * criu's value beside ours, or says that criu failed, in the words of
 * criu's own log. Which of the two happens depends on the criu and the
 * kernel (Debian's criu 3.17.1 fails on Linux 6.13+), so the test accepts
 * either and checks that each is reported consistently. No timing asserted.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { benchMain, runBench, usable } from './support/bench.js';

interface FigureJson {
  name: string;
  unit: string;
  ours: number;
  reference: number | null;
  referenceName: string | null;
  ratio: number | null;
  referenceError?: string;
}
interface ReportJson {
  criu: { path: string; version: string } | null;
  planned: unknown[];
  scenarios: Array<{ name: string; ok: boolean; error?: string; figures: FigureJson[]; notes: string[] }>;
}

function installedCriu(): string | null {
  if (process.env['CRIU']) return process.env['CRIU'];
  return existsSync('/usr/sbin/criu') ? '/usr/sbin/criu' : null;
}

test('a $CRIU that is not a runnable criu is an environment error, found before anything runs', async (t) => {
  if (!existsSync(benchMain) || !usable(t)) return;
  const missing = await runBench(['--only', 'criu-dump'], '/nonexistent/criu');
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /cannot run \$CRIU=\/nonexistent\/criu: .*ENOENT/);
  // /bin/true runs, exits 0 and prints no version: not a criu.
  const impostor = await runBench(['--only', 'criu-dump'], '/bin/true');
  assert.equal(impostor.code, 2);
  assert.match(impostor.stderr, /\$CRIU=\/bin\/true is not a criu binary/);
  assert.doesNotMatch(impostor.stderr, /dumping/, 'nothing was measured');
});

test('with a real criu, each figure has criu beside ours or criu’s own error', async (t) => {
  const criu = installedCriu();
  if (!criu) {
    t.skip('no criu: set $CRIU or install criu');
    return;
  }
  if (!existsSync(benchMain) || !usable(t)) return;
  const version = /^Version:\s*(\S+)/m.exec(execFileSync(criu, ['--version'], { encoding: 'utf8' }))?.[1];
  assert.ok(version, 'criu --version names a version');
  const out = mkdtempSync(join(tmpdir(), 'lazyrestore-bench-criu-test-'));
  try {
    const run = await runBench(
      ['--only', 'criu', '--quick', '--mib', '16', '--faults', '200', '--json', '--out', out],
      criu,
    );
    assert.equal(run.code, 0, run.stderr);
    const report = JSON.parse(run.stdout) as ReportJson;
    assert.deepEqual(report.criu, { path: criu, version });
    assert.deepEqual(report.planned, []);
    assert.deepEqual(
      report.scenarios.map((s) => s.name),
      ['criu-dump', 'criu-restore', 'criu-fault-latency'],
    );
    const label = `CRIU ${version}`;
    const failed: string[] = [];
    for (const s of report.scenarios) {
      assert.equal(s.ok, true, `${s.name}: ${s.error}`);
      for (const f of s.figures) {
        assert.ok(Number.isFinite(f.ours) && f.ours >= 0, `${s.name} ${f.name}: ours measured`);
        if (f.referenceName === null || !f.referenceName.startsWith(label)) continue; // the C floor row
        if (f.referenceError !== undefined) {
          failed.push(`${s.name} ${f.name}`);
          assert.equal(f.reference, null);
          assert.equal(f.ratio, null);
          // criu's own words, quoted from its log, or what criu printed when it wrote none.
          assert.match(f.referenceError, /criu (dump|restore|lazy-pages) (exited with \d+|was killed)/);
          assert.ok(
            s.notes.some((n) => n.includes(f.referenceError!)),
            `${s.name}: the failure is in the notes`,
          );
        } else if (f.reference !== null) {
          assert.match(f.referenceName, /measured in this run/);
          assert.ok(Math.abs(f.ratio! - f.ours / f.reference) <= 0.01 * f.ratio!, 'ratio is ours/criu');
          // The restored program's stamps are in criu's time namespace: unconverted they would come out
          // before the restore began (the namespace's clock lags ours by the time since the dump).
          if (f.unit === 'ms') assert.ok(f.reference > 0, `${s.name} ${f.name}: criu's stamps are on the bench clock`);
        }
      }
    }
    const dump = report.scenarios[0]!;
    if (dump.figures.some((f) => f.referenceError !== undefined)) {
      // Without a criu image nothing of criu's can be measured: every criu figure says so.
      const criuFigures = report.scenarios.flatMap((s) => s.figures).filter((f) => f.referenceName?.startsWith(label));
      assert.equal(failed.length, criuFigures.length);
      assert.match(dump.figures[0]!.referenceError!, /Error \(criu\//, 'quoted from the dump log');
      assert.match(run.stderr, /criu-dump +\S.* FAILED/, 'the table says FAILED');
    } else {
      const page = dump.figures.find((f) => f.name === '16 MiB: page data')!;
      assert.ok(page.reference! >= 16, `criu wrote the 16 MiB of pages (${page.reference} MiB)`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
