/**
 * The CLI over a running daemon (a real one on a real socket): dump, images and restore go through the API,
 * `restore --detach` returns once the tree runs and the daemon serves the rest; without a daemon --detach is an
 * explicit error, and a failure reads the same whichever process did the work.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startDaemon, type Daemon } from '../daemon/service.js';
import { DaemonClient } from '../cli/client.js';
import { killAll, lazyMissing, leftOver, sleep, tempDir, Workload } from './support/restore.js';
import { repoRoot } from './support/programs.js';

const run = promisify(execFile);
const cli = join(repoRoot, 'dist', 'cli', 'main.js');
const tmp = tempDir('cli-daemon');
let daemon: Daemon;
let socket: string;
let w: Workload | undefined;
let dumpedSize = 0;

const noLazy = lazyMissing();

async function lazyrestore(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  // No LAZYRESTORE_SOCKET from the environment: every command here names its daemon or its store.
  const env = { ...process.env };
  delete env['LAZYRESTORE_SOCKET'];
  try {
    const { stdout, stderr } = await run(process.execPath, [cli, ...args], { encoding: 'utf8', env });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

before(async () => {
  daemon = await startDaemon({
    socketPath: join(tmp.path, 'api.sock'),
    dataDir: join(tmp.path, 'data'),
    logLevel: 'silent',
  });
  socket = daemon.socketPath;
});

after(async () => {
  w?.kill();
  if (w !== undefined) killAll([w.pid]);
  await daemon?.close();
  tmp.remove();
});

test('dump and images go through the daemon', async () => {
  w = new Workload(join(tmp.path, 'out.txt'), 'restore_mem', ['16', join(tmp.path, 'go')]);
  const pid = await w.started();
  await w.waitOutput(/^tick 2$/m);
  const d = await lazyrestore(['dump', String(pid), '--name', 'mem', '--socket', socket]);
  assert.equal(d.code, 0, d.stderr);
  assert.match(d.stdout, new RegExp(`^Dumped process ${pid} as mem$`, 'm'));
  await w.reaped();
  dumpedSize = w.output().length;
  assert.deepEqual(
    (await daemon.store.list()).map((s) => s.name),
    ['mem'],
    "the image is in the daemon's store",
  );

  const ls = await lazyrestore(['images', 'ls', '--socket', socket, '--json']);
  assert.equal(ls.code, 0, ls.stderr);
  assert.deepEqual(
    (JSON.parse(ls.stdout) as Array<{ name: string }>).map((s) => s.name),
    ['mem'],
  );
  const inspect = await lazyrestore(['images', 'inspect', 'mem', '--socket', socket]);
  assert.equal(inspect.code, 0, inspect.stderr);
  assert.match(inspect.stdout, /^Image mem$/m);
  assert.match(inspect.stdout, new RegExp(`^ +${pid} +restore_mem +ppid `, 'm'));
});

test('restore --detach returns once the tree runs; the daemon serves its memory until complete', async (t) => {
  if (noLazy) return t.skip(`lazy restore unsupported: ${noLazy}`);
  assert.ok(w);
  const r = await lazyrestore(['restore', 'mem', '--detach', '--socket', socket, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout) as Record<string, unknown>;
  assert.equal(report['rootPid'], w.pid);
  assert.equal(report['mode'], 'lazy');
  assert.equal(typeof report['runningMs'], 'number');
  // The CLI has exited: the restore goes on in the daemon.
  const api = new DaemonClient({ socketPath: socket });
  const [mine] = (await api.restores()).filter((x) => x.image === 'mem');
  assert.ok(mine);
  let status = await api.restoreStatus(mine.id);
  while (status.state === 'restoring' || status.state === 'running') {
    await sleep(20);
    status = await api.restoreStatus(mine.id);
  }
  assert.equal(status.state, 'complete', JSON.stringify(status.error));
  writeFileSync(join(tmp.path, 'go'), '');
  await w.waitOutput(/^CHECK OK 16\nDONE$/m);
  assert.deepEqual(await leftOver([w.pid]), []);
});

test('restore through the daemon waits until complete and prints the summary for people', async (t) => {
  if (noLazy) return t.skip(`lazy restore unsupported: ${noLazy}`);
  assert.ok(w);
  truncateSync(w.out, dumpedSize); // the go file exists: the restored program checks at once
  const r = await lazyrestore(['restore', 'mem', '--socket', socket]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^Restored mem as process ${w.pid}$`, 'm'));
  assert.match(r.stdout, /complete after +[\d.]+ ms/);
  assert.match(r.stdout, /mode +lazy/);
  await w.waitOutput(/^CHECK OK 16\nDONE$/m);
  assert.deepEqual(await leftOver([w.pid]), []);
});

test('without a daemon --detach is an error; failures read the same with or without the daemon', async () => {
  const local = join(tmp.path, 'local');
  const detached = await lazyrestore(['restore', 'mem', '--detach', '--data-dir', local]);
  assert.equal(detached.code, 1);
  assert.match(detached.stderr, /^lazyrestore: --detach: no daemon to take over .* \(INVALID_ARGUMENT\)$/m);

  const viaDaemon = await lazyrestore(['restore', 'nothing', '--socket', socket]);
  const here = await lazyrestore(['restore', 'nothing', '--data-dir', local]);
  assert.equal(viaDaemon.code, 1);
  assert.equal(here.code, 1);
  assert.match(viaDaemon.stderr, /\(IMAGE_NOT_FOUND\)$/m);
  assert.equal(viaDaemon.stderr, here.stderr);
  const jsonDaemon = await lazyrestore(['images', 'rm', 'nothing', '--socket', socket, '--json']);
  const jsonHere = await lazyrestore(['images', 'rm', 'nothing', '--data-dir', local, '--json']);
  assert.equal(jsonDaemon.code, 1);
  assert.equal(jsonDaemon.stdout, jsonHere.stdout);

  const gone = await lazyrestore(['images', 'ls', '--socket', join(tmp.path, 'nobody.sock')]);
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /cannot reach the lazyrestore daemon .*nobody\.sock.* \(DAEMON_UNREACHABLE\)$/m);
});

test('--url with --token-file reaches the TCP listener; --url alone is refused', async () => {
  const tokenFile = join(tmp.path, 'token');
  writeFileSync(tokenFile, 'a-token-of-at-least-16-chars\n', { mode: 0o600 });
  const tcp = await startDaemon({
    socketPath: join(tmp.path, 'tcp.sock'),
    dataDir: join(tmp.path, 'data-tcp'),
    listen: '127.0.0.1:0',
    tokenFile,
    logLevel: 'silent',
  });
  try {
    const url = `http://127.0.0.1:${tcp.tcp!.port}`;
    const ls = await lazyrestore(['images', 'ls', '--url', url, '--token-file', tokenFile, '--json']);
    assert.equal(ls.code, 0, ls.stderr);
    assert.deepEqual(JSON.parse(ls.stdout), []);
    const noToken = await lazyrestore(['images', 'ls', '--url', url]);
    assert.equal(noToken.code, 1);
    assert.match(noToken.stderr, /--url needs --token-file.* \(INVALID_ARGUMENT\)$/m);
    const wrong = join(tmp.path, 'wrong-token');
    writeFileSync(wrong, 'another-token-of-16-chars', { mode: 0o600 });
    const denied = await lazyrestore(['images', 'ls', '--url', url, '--token-file', wrong]);
    assert.equal(denied.code, 1);
    assert.match(denied.stderr, /\(UNAUTHORIZED\)$/m);
  } finally {
    await tcp.close();
  }
});
