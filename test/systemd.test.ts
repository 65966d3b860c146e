/**
 * lazyrestore under systemd: the unit passes `systemd-analyze verify`, and the daemon speaks the service protocol
 * itself. The test plays systemd on a real notify socket: READY=1 once the API serves, every lazy task's uffd
 * deposited with FDSTORE=1, and after a SIGKILL a new daemon started with those fds ($LISTEN_FDS) takes the task
 * over, which then verifies all its memory.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { native } from '../native/index.js';
import { DaemonClient } from '../cli/client.js';
import { checkLazySupported } from '../daemon/restore/lazy.js';
import { repoRoot } from './support/programs.js';
import { killAll, leftOver, sleep, tempDir, until, Workload } from './support/restore.js';

const tmp = tempDir('systemd');
const children: ChildProcess[] = [];
const pids: number[] = [];
let notifyFd = -1;

after(async () => {
  for (const c of children) c.kill('SIGKILL');
  killAll(pids);
  await leftOver(pids);
  if (notifyFd >= 0) native.closeFd(notifyFd);
  for (const n of received) if (n.fd !== null) native.closeFd(n.fd);
  tmp.remove();
});

function systemdAnalyze(): string | null {
  for (const p of ['/usr/bin/systemd-analyze', '/bin/systemd-analyze']) if (existsSync(p)) return p;
  return null;
}

test('the unit passes systemd-analyze verify', (t) => {
  const tool = systemdAnalyze();
  if (!tool) return t.skip('systemd-analyze is not installed');
  const out = execFileSync(tool, ['verify', join(repoRoot, 'contrib', 'systemd', 'lazyrestore.service')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  assert.equal(out.trim(), '');
});

interface Notification {
  text: string;
  fd: number | null;
}

const received: Notification[] = [];

/** Moves every notification that has arrived into `received` without waiting. */
function drain(): void {
  for (;;) {
    let m: Notification | null;
    try {
      m = native.unixRecv(notifyFd, 0);
    } catch {
      return; // ETIMEDOUT: nothing more right now
    }
    if (m === null) return;
    received.push(m);
  }
}

/** The first notification (in order of arrival) that matches, waiting for it; earlier ones stay for later calls. */
function notification(match: (n: Notification) => boolean, timeoutMs = 30_000): Promise<Notification> {
  return until(
    'a matching notification',
    () => {
      drain();
      const i = received.findIndex(match);
      return i >= 0 ? received.splice(i, 1)[0]! : undefined;
    },
    timeoutMs,
  );
}

function daemon(
  dir: string,
  extra: { fds?: number[]; listen?: string } = {},
): { child: ChildProcess; log: () => string } {
  const args = [
    join(repoRoot, 'dist', 'cli', 'main.js'),
    'daemon',
    '--socket',
    join(dir, 'api.sock'),
    '--data-dir',
    join(dir, 'data'),
  ];
  const env: NodeJS.ProcessEnv = { ...process.env, NOTIFY_SOCKET: join(dir, 'notify.sock') };
  let child: ChildProcess;
  if (extra.listen) {
    // systemd sets LISTEN_PID to the service's own pid: the shell's, kept by exec.
    env['LISTEN_FDS'] = String(extra.fds!.length);
    env['LISTEN_FDNAMES'] = extra.listen;
    child = spawn('/bin/sh', ['-c', 'LISTEN_PID=$$ exec "$0" "$@"', process.execPath, ...args], {
      env,
      stdio: ['ignore', 'pipe', 'pipe', ...extra.fds!],
    });
  } else {
    child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  }
  children.push(child);
  let log = '';
  child.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  return { child, log: () => log };
}

test('READY=1, uffds in the fd store, and a restart with $LISTEN_FDS takes a lazy task over', async (t) => {
  try {
    checkLazySupported();
  } catch (e) {
    return t.skip(`lazy restore unsupported: ${(e as Error).message}`);
  }
  const dir = join(tmp.path, 'svc');
  execFileSync('mkdir', ['-p', dir]);
  notifyFd = native.unixBindDgram(join(dir, 'notify.sock'));
  const first = daemon(dir);
  const ready = await notification((n) => n.text.startsWith('READY=1'));
  assert.match(ready.text, new RegExp(`MAINPID=${first.child.pid}`));
  const api = new DaemonClient({ socketPath: join(dir, 'api.sock') });

  const w = new Workload(join(dir, 'w.out'), 'restore_mem', ['512', join(dir, 'w.go')]);
  const pid = await w.started();
  pids.push(pid);
  await w.waitOutput(/^tick 2$/m);
  await api.dump({ pid, name: 'w' });
  await w.reaped();
  const a = await api.send('POST', '/v1/restores', { image: 'w' });
  assert.equal(a.status, 202, a.body);
  const stored = await notification((n) => n.text.startsWith('FDSTORE=1\n'));
  const name = /^FDNAME=(.+)$/m.exec(stored.text)![1]!;
  assert.match(name, /^lr\.\d+\.\d+\.\d+-\d+$/);
  assert.ok(stored.fd !== null);
  assert.equal(readlinkSync(`/proc/self/fd/${stored.fd}`), 'anon_inode:[userfaultfd]');
  for (;;) {
    const r = (await api.restores())[0];
    if (r && r.state !== 'restoring') break;
    await sleep(5);
  }
  assert.ok((await api.tasks())[0]!.lazyPages > 0, 'pages are still lazy when the daemon dies');
  first.child.kill('SIGKILL');
  await until('the daemon to die', () => (first.child.signalCode ? true : undefined));

  const second = daemon(dir, { fds: [stored.fd], listen: name });
  await notification((n) => n.text.startsWith('READY=1'));
  await until('the takeover in the log', () =>
    /custody: took over 1 task\(s\)/.test(second.log()) ? true : undefined,
  );
  const again = await notification((n) => n.text.startsWith('FDSTORE=1\n'));
  assert.notEqual(/^FDNAME=(.+)$/m.exec(again.text)![1], name, 'deposited again under the new name');
  await notification((n) => n.text === `FDSTOREREMOVE=1\nFDNAME=${name}`);
  native.closeFd(stored.fd);
  writeFileSync(join(dir, 'w.go'), '');
  await w.waitOutput(/^CHECK OK 512\nDONE$/m, 120_000);
  assert.deepEqual(await leftOver([pid]), []);
  second.child.kill('SIGTERM');
  await until('the daemon to stop', () => (second.child.exitCode !== null ? true : undefined));
});
