import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { probeKernel, vdsoLayout, type KernelReport } from '../daemon/kernel-probes.js';
import { native, type UffdFeatureName } from '../native/index.js';
import { repoRoot } from './support/programs.js';

const cli = join(repoRoot, 'dist', 'cli', 'main.js');
const EVENTS: UffdFeatureName[] = [
  'UFFD_FEATURE_EVENT_FORK',
  'UFFD_FEATURE_EVENT_REMAP',
  'UFFD_FEATURE_EVENT_REMOVE',
  'UFFD_FEATURE_EVENT_UNMAP',
];

function notMet(report: KernelReport): string[] {
  return report.requirements.filter((q) => !q.ok).map((q) => `${q.name}: ${q.detail}`);
}

/** Children of this process, from every thread's /proc children list (CONFIG_PROC_CHILDREN). */
function ourChildren(): number[] | null {
  const tasks = readdirSync('/proc/self/task');
  const files = tasks.map((tid) => `/proc/self/task/${tid}/children`);
  if (!files.every((f) => existsSync(f))) return null;
  return files.flatMap((f) => readFileSync(f, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number));
}

test('probeKernel: every requirement of lazy restore is met on this machine', (t) => {
  if (process.geteuid?.() !== 0) return t.skip('lazy restore needs root; this test runs as another user');
  const report = probeKernel();
  assert.deepEqual(notMet(report), []);
  assert.equal(report.ok, true);
  assert.equal(report.kernel.release, os.release());
  assert.equal(report.kernel.arch, 'x86_64');
  assert.ok(report.kernel.pidMax !== null && report.kernel.pidMax >= 300);
  assert.equal(report.privileges.root, true);
  assert.equal(report.privileges.capabilities.CAP_SYS_PTRACE, true);
});

test('probeKernel: userfaultfd offers the four non-cooperative events, by name', (t) => {
  if (process.geteuid?.() !== 0) return t.skip('needs root');
  const u = probeKernel().userfaultfd;
  assert.equal(u.usable, true, u.error?.message);
  for (const name of EVENTS) assert.ok(u.featureNames.includes(name), `${name} in ${u.featureNames.join(',')}`);
  assert.ok(u.via === 'syscall' || u.via === '/dev/userfaultfd');
  assert.equal(u.kernelFaults, true);
  assert.notEqual(u.ioctls, 0);
});

test('probeKernel: the vDSO layout matches /proc/self/maps', () => {
  const regions = probeKernel().vdso.regions;
  const vdso = regions.find((r) => r.name === '[vdso]');
  assert.ok(vdso, 'a [vdso] region');
  assert.ok(vdso.size > 0 && vdso.size % 4096 === 0);
  const maps = readFileSync('/proc/self/maps', 'utf8');
  const hexStart = vdso.start.toString(16);
  assert.match(maps, new RegExp(`^${hexStart}-${vdso.end.toString(16)} .*\\[vdso\\]$`, 'm'));
});

test('vdsoLayout parses the vvar, vvar_vclock and vdso lines only', () => {
  const maps = [
    '7ffc1000-7ffc2000 rw-p 00000000 00:00 0                          [stack]',
    '7fff0000-7fff4000 r--p 00000000 00:00 0                          [vvar]',
    '7fff4000-7fff6000 r--p 00000000 00:00 0                          [vvar_vclock]',
    '7fff6000-7fff8000 r-xp 00000000 00:00 0                          [vdso]',
    'ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]',
  ].join('\n');
  assert.deepEqual(vdsoLayout(maps), [
    { name: '[vvar]', start: 0x7fff0000, end: 0x7fff4000, size: 0x4000 },
    { name: '[vvar_vclock]', start: 0x7fff4000, end: 0x7fff6000, size: 0x2000 },
    { name: '[vdso]', start: 0x7fff6000, end: 0x7fff8000, size: 0x2000 },
  ]);
});

test('the clone3 and ptrace probes reap their children', (t) => {
  if (process.geteuid?.() !== 0) return t.skip('clone3 with set_tid needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE');
  const before = ourChildren();
  if (before === null) return t.skip('/proc/<pid>/task/<tid>/children is missing (CONFIG_PROC_CHILDREN off)');
  const pid = native.probeClone3SetTid();
  assert.equal(native.probePtrace(), true);
  assert.ok(pid > 0 && pid !== process.pid);
  assert.equal(existsSync(`/proc/${pid}`), false, `pid ${pid} was reaped`);
  assert.deepEqual(ourChildren(), before);
});

test('`lazyrestore check --json` prints the same facts and exits 0', (t) => {
  if (process.geteuid?.() !== 0) return t.skip('lazy restore needs root; this test runs as another user');
  const run = spawnSync(process.execPath, [cli, 'check', '--json'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(run.status, 0, run.stderr);
  assert.equal(run.stderr, '');
  const fromCli = JSON.parse(run.stdout) as KernelReport;
  const here = probeKernel();
  assert.deepEqual(fromCli.kernel, here.kernel);
  assert.deepEqual(fromCli.privileges, here.privileges);
  assert.deepEqual(fromCli.userfaultfd, here.userfaultfd);
  assert.equal(fromCli.ok, true);
  assert.deepEqual(
    fromCli.requirements.map((q) => [q.name, q.ok]),
    here.requirements.map((q) => [q.name, q.ok]),
  );
  // Addresses differ between processes (ASLR); names and sizes do not.
  const shape = (r: KernelReport) => r.vdso.regions.map((v) => [v.name, v.size]);
  assert.deepEqual(shape(fromCli), shape(here));
  assert.ok(fromCli.clone3SetTid.pid !== null && fromCli.clone3SetTid.pid > 0);
});

test('`lazyrestore check` prints a readable report ending in "Looks good."', (t) => {
  if (process.geteuid?.() !== 0) return t.skip('lazy restore needs root; this test runs as another user');
  const run = spawnSync(process.execPath, [cli, 'check'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(run.status, 0, run.stderr);
  for (const title of [
    'Kernel',
    'Privileges',
    'userfaultfd',
    'ptrace',
    'pidfd',
    'clone3',
    'vDSO layout',
    'Requirements',
  ]) {
    assert.match(run.stdout, new RegExp(`^${title}$`, 'm'));
  }
  for (const name of EVENTS) assert.match(run.stdout, new RegExp(`^\\s+${name}\\s+yes$`, 'm'));
  assert.match(run.stdout, /^ {2}\[vdso\]\s+0x[0-9a-f]+-0x[0-9a-f]+\s+\d+ KiB$/m);
  assert.match(run.stdout, /\nLooks good\.\n$/);
});
