import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { KernelReport } from '../daemon/kernel-probes.js';
import { repoRoot } from './support/programs.js';

const cli = join(repoRoot, 'dist', 'cli', 'main.js');

/** Runs `prefix... node dist/cli/main.js args...`; the timeout kills a hung CLI so nothing is left behind. */
function run(args: string[], prefix: string[] = []): SpawnSyncReturns<string> {
  const argv = [...prefix, process.execPath, cli, ...args];
  const env = { ...process.env, LAZYRESTORE_DEBUG: '' };
  const result = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL', env });
  if (result.error) throw result.error;
  return result;
}

test('--help lists the check command', () => {
  const r = run(['--help']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^ {2}lazyrestore check\s+\S/m);
  assert.match(r.stdout, /--version/);
});

test('--version prints the version of package.json', () => {
  const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
  const r = run(['--version']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), pkg.version);
});

test('an unknown command exits 1 with one clear line and no stack trace', () => {
  const r = run(['frobnicate']);
  assert.equal(r.status, 1);
  assert.equal(r.stdout, '');
  assert.equal(r.stderr, "lazyrestore: Unknown command: frobnicate (see 'lazyrestore --help')\n");
});

test('an unknown option exits 1 before the command runs', () => {
  const r = run(['check', '--bogus']);
  assert.equal(r.status, 1);
  assert.equal(r.stdout, '', 'check must not have run');
  assert.match(r.stderr, /^lazyrestore: Unknown argument: bogus/);
});

test('no command at all is a usage error', () => {
  const r = run([]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^lazyrestore: Name a command/);
});

/** The argv prefix that runs a command as nobody, or the reason it cannot be done here. */
function asNobody(): { prefix: string[] } | { skip: string } {
  if (process.geteuid?.() !== 0) return { skip: 'switching to nobody needs root' };
  let prefix: string[];
  if (existsSync('/usr/bin/setpriv')) prefix = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];
  else if (existsSync('/usr/sbin/runuser') || existsSync('/sbin/runuser')) prefix = ['runuser', '-u', 'nobody', '--'];
  else return { skip: 'neither setpriv nor runuser is installed' };
  // The checkout may sit in a directory that nobody cannot read (a home directory of mode 0700).
  const files = [cli, join(repoRoot, 'build', 'Release', 'lazyrestore.node'), join(repoRoot, 'node_modules', 'yargs')];
  const probe = `for (const f of ${JSON.stringify(files)}) require('fs').accessSync(f, require('fs').constants.R_OK)`;
  const r = spawnSync(prefix[0]!, [...prefix.slice(1), process.execPath, '-e', probe], { encoding: 'utf8' });
  if (r.status !== 0) return { skip: `the checkout is not readable by uid 65534: ${r.stderr.split('\n')[0]}` };
  return { prefix };
}

test('check as an unprivileged user exits 1 and names the missing privilege', (t) => {
  const nobody = asNobody();
  if ('skip' in nobody) return t.skip(nobody.skip);
  const r = run(['check'], nobody.prefix);
  assert.equal(r.status, 1, r.stdout);
  assert.match(
    r.stderr,
    /^lazyrestore: missing privileges: euid 65534 lacks CAP_SYS_ADMIN, CAP_SYS_PTRACE\b.*run as root$/m,
  );
  assert.doesNotMatch(r.stdout, /Looks good/);
  assert.match(r.stdout, /^ {2}privileges\s+MISSING/m);
});

test('check --json as root without capabilities reports ok=false with the same exit rule', (t) => {
  if (process.geteuid?.() !== 0) return t.skip('dropping capabilities from root needs root');
  if (!existsSync('/usr/bin/setpriv')) return t.skip('setpriv is not installed');
  const r = run(['check', '--json'], ['setpriv', '--bounding-set=-all', '--inh-caps=-all']);
  assert.equal(r.status, 1);
  const report = JSON.parse(r.stdout) as KernelReport;
  assert.equal(report.ok, false);
  assert.equal(report.privileges.root, true);
  assert.equal(report.privileges.capEff, '0000000000000000');
  const privileges = report.requirements.find((q) => q.name === 'privileges');
  assert.equal(privileges?.ok, false);
  assert.equal(report.clone3SetTid.works, false);
  assert.equal(report.clone3SetTid.error?.code, 'EPERM');
  assert.match(r.stderr, /^lazyrestore: missing privileges: root \(euid 0\) lacks CAP_SYS_ADMIN/m);
  assert.match(r.stderr, /^lazyrestore: missing clone3 set_tid: .*EPERM/m);
});
