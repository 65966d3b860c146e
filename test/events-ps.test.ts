/**
 * `lazyrestore ps` against a daemon started here: an empty service, then a lazy task in the daemon's page service
 * (a uffd_target whose whole region is lazy and whose data never arrives, so it stays listed) and its figures, as
 * a table and as JSON; without a daemon, a clear message and exit status 1.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startDaemon, type Daemon } from '../daemon/service.js';
import { PageSource } from '../daemon/page-service.js';
import { native } from '../native/index.js';
import { tempDir } from './support/restore.js';
import { repoRoot } from './support/programs.js';
import { negotiate, startTarget, type Target } from './support/uffd.js';

const run = promisify(execFile);
const cli = join(repoRoot, 'dist', 'cli', 'main.js');
const tmp = tempDir('events-ps');
let daemon: Daemon;

async function lazyrestore(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = { ...process.env, LAZYRESTORE_SOCKET: join(tmp.path, 'nobody-here.sock') };
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
});

after(async () => {
  await daemon?.close();
  tmp.remove();
});

test('ps with no task served says so; --json gives an empty list', async () => {
  const text = await lazyrestore(['ps', '--socket', daemon.socketPath]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^No task is served/);
  const json = await lazyrestore(['ps', '--socket', daemon.socketPath, '--json']);
  assert.equal(json.code, 0, json.stderr);
  assert.deepEqual(JSON.parse(json.stdout), { tasks: [] });
});

test('ps lists a lazy task of the daemon with its lazy pages, faults and events', async () => {
  let target: Target | undefined;
  let task = 0;
  try {
    target = await startTarget(4);
    negotiate(target);
    try {
      task = daemon.pageService.addTask(target.uffd, new PageSource(), target.prog.pid);
    } catch (e) {
      native.closeFd(target.uffd);
      throw e;
    }
    daemon.pageService.addLazyRange(task, target.addr, target.len, target.addr);
    const pages = target.len / 4096;
    const json = await lazyrestore(['ps', '--socket', daemon.socketPath, '--json']);
    assert.equal(json.code, 0, json.stderr);
    const [t] = (
      JSON.parse(json.stdout) as {
        tasks: Array<{ task: number; pid: number | null; parent: number | null; lazyPages: number }>;
      }
    ).tasks;
    assert.deepEqual([t?.task, t?.pid, t?.parent, t?.lazyPages], [task, target.prog.pid, null, pages]);
    const text = await lazyrestore(['ps', '--socket', daemon.socketPath]);
    assert.equal(text.code, 0, text.stderr);
    const lines = text.stdout.trimEnd().split('\n');
    assert.match(
      lines[0]!,
      /^TASK\s+PID\s+PARENT\s+LAZY PAGES\s+FAULTS\s+COPIED\s+ZEROED\s+FORK\s+REMAP\s+REMOVE\s+UNMAP$/,
    );
    assert.deepEqual(lines[1]!.split(/\s+/), [
      String(task),
      String(target.prog.pid),
      '-',
      String(pages),
      '0',
      '0',
      '0',
      '0',
      '0',
      '0',
      '0',
    ]);
  } finally {
    if (task !== 0) daemon.pageService.releaseTask(task);
    target?.prog.kill();
  }
});

test('ps without a daemon: a clear message and exit status 1', async () => {
  const named = await lazyrestore(['ps', '--socket', join(tmp.path, 'none.sock')]);
  assert.equal(named.code, 1);
  assert.match(named.stderr, /^lazyrestore: no lazyrestore daemon to ask \(cannot reach the lazyrestore daemon at /);
  const dflt = await lazyrestore(['ps']);
  assert.equal(dflt.code, 1);
  assert.match(dflt.stderr, /no lazyrestore daemon to ask \(none answers at the default socket\)/);
  assert.equal(dflt.stdout, '');
});
