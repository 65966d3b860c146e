/**
 * `lazyrestore dump` and `lazyrestore images` end to end through the CLI (node dist/cli/main.js), on real
 * processes: JSON documents, exit statuses, error codes, and the target left alone when a dump is refused.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Program, repoRoot } from './support/programs.js';

const cli = join(repoRoot, 'dist', 'cli', 'main.js');
const skip = process.getuid?.() !== 0 ? 'dumping other processes needs root' : false;

function run(args: string[]): SpawnSyncReturns<string> {
  const env = { ...process.env, LAZYRESTORE_DEBUG: '', LAZYRESTORE_DATA_DIR: '' };
  const r = spawnSync(process.execPath, [cli, ...args], {
    encoding: 'utf8',
    timeout: 120_000,
    killSignal: 'SIGKILL',
    env,
  });
  if (r.error) throw r.error;
  return r;
}

function json<T>(r: SpawnSyncReturns<string>): T {
  return JSON.parse(r.stdout) as T;
}

async function start(name: string, args: string[] = []): Promise<{ prog: Program; pid: number; line: string }> {
  const prog = new Program(name, args);
  try {
    const line = await prog.waitFor('READY');
    return { prog, pid: Number(/ pid=(\d+)/.exec(line)![1]), line };
  } catch (e) {
    prog.kill();
    throw e;
  }
}

function stateOf(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  return stat.charAt(stat.lastIndexOf(')') + 2);
}

async function gone(pid: number): Promise<boolean> {
  for (let i = 0; i < 500; i++) {
    if (!existsSync(`/proc/${pid}`)) return true;
    await sleep(20);
  }
  return false;
}

interface Summary {
  name: string;
  id: string;
  pages: number;
  bytes: number;
  newBytes: number;
  info: { rootPid: number; comm: string };
}

test('dump, images ls, inspect and rm end to end with --json', { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lazyrestore-cli-'));
  const s = await start('dump_tree', ['2']);
  try {
    const d = run(['dump', String(s.pid), '--data-dir', dir, '--leave-running', '--json', '--name', 'tree-1']);
    assert.equal(d.status, 0, d.stderr);
    assert.equal(d.stderr, '', 'no progress bar when stderr is not a terminal');
    const result = json<{
      name: string;
      processes: number;
      threads: number;
      frozenMs: number;
      bytesStored: number;
      leftRunning: boolean;
    }>(d);
    assert.equal(result.name, 'tree-1');
    assert.equal(result.processes, 3);
    assert.equal(result.threads, 3);
    assert.equal(result.leftRunning, true);
    assert.ok(result.frozenMs > 0);
    assert.notEqual(stateOf(s.pid), 'T');

    const ls = run(['images', 'ls', '--data-dir', dir, '--json']);
    assert.equal(ls.status, 0, ls.stderr);
    const images = json<Summary[]>(ls);
    assert.deepEqual(
      images.map((i) => [i.name, i.info.rootPid, i.info.comm]),
      [['tree-1', s.pid, 'dump_tree']],
    );
    const table = run(['images', 'ls', '--data-dir', dir]);
    assert.match(table.stdout, /^NAME\s+CREATED\s+PID\s+COMMAND\s+PAGES\s+DATA\s+ADDED\ntree-1\s/);

    const inspect = run(['images', 'inspect', 'tree-1', '--data-dir', dir, '--json']);
    assert.equal(inspect.status, 0, inspect.stderr);
    const img = json<{ summary: Summary; meta: Record<string, unknown> }>(inspect);
    const tree = img.meta['tree'] as { processes: Array<{ pid: number }> };
    assert.equal(tree.processes[0]!.pid, s.pid);
    assert.ok(img.meta[`process/${s.pid}`]);
    assert.equal(img.summary.pages, images[0]!.pages);
    const human = run(['images', 'inspect', 'tree-1', '--data-dir', dir]);
    assert.match(human.stdout, new RegExp(`^Processes\\n  ${s.pid} +dump_tree +ppid ${s.prog.pid} +running`, 'm'));

    // A default name, and a dump that kills the tree.
    const k = run(['dump', String(s.pid), '--data-dir', dir, '--json']);
    assert.equal(k.status, 0, k.stderr);
    const killed = json<{ name: string; leftRunning: boolean; bytesStored: number; bytes: number }>(k);
    assert.match(killed.name, new RegExp(`^dump_tree-${s.pid}-\\d{8}T\\d{6}$`));
    assert.equal(killed.leftRunning, false);
    assert.ok(killed.bytesStored < killed.bytes * 0.2, "the second dump shares the first one's pages");
    assert.ok(await gone(s.pid));

    const rm = run(['images', 'rm', 'tree-1', '--data-dir', dir, '--json']);
    assert.equal(rm.status, 0, rm.stderr);
    assert.equal(json<{ name: string }>(rm).name, 'tree-1');
    assert.deepEqual(
      json<Summary[]>(run(['images', 'ls', '--data-dir', dir, '--json'])).map((i) => i.name),
      [killed.name],
    );
    const missing = run(['images', 'inspect', 'tree-1', '--data-dir', dir, '--json']);
    assert.equal(missing.status, 1);
    assert.equal(json<{ error: { code: string } }>(missing).error.code, 'IMAGE_NOT_FOUND');
  } finally {
    s.prog.kill();
    rmSync(dir, { recursive: true, force: true });
  }
});

test(
  'the CLI refuses a socket and an unusable data directory with stable codes, leaving the target alone',
  { skip },
  async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lazyrestore-cli-'));
    const s = await start('dump_counter', ['socket']);
    try {
      const sock = run(['dump', String(s.pid), '--data-dir', join(dir, 'store'), '--json']);
      assert.equal(sock.status, 1);
      const err = json<{ error: { code: string; message: string; problems: Array<{ pid: number; what: string }> } }>(
        sock,
      ).error;
      assert.equal(err.code, 'UNSUPPORTED_FD');
      assert.deepEqual(new Set(err.problems.map((p) => p.pid)), new Set([s.pid]), 'both ends of the socketpair');
      assert.equal(err.problems.length, 2);
      assert.match(
        sock.stderr,
        new RegExp(`^lazyrestore: process ${s.pid}: fd \\d+ is a socket .*\\(UNSUPPORTED_FD\\)$`, 'm'),
      );

      const file = join(dir, 'not-a-directory');
      writeFileSync(file, 'x');
      const bad = run(['dump', String(s.pid), '--data-dir', join(file, 'store')]);
      assert.equal(bad.status, 1);
      assert.equal(bad.stdout, '');
      assert.match(
        bad.stderr,
        /^lazyrestore: cannot use data directory .*not-a-directory\/store: .*\(DATA_DIR_UNWRITABLE\)$/m,
      );

      const nope = run(['dump', '2', '--data-dir', join(dir, 'store')]);
      assert.equal(nope.status, 1);
      assert.match(nope.stderr, /\(KERNEL_THREAD\)$/m);

      assert.deepEqual(json<unknown[]>(run(['images', 'ls', '--data-dir', join(dir, 'store'), '--json'])), []);
      assert.notEqual(stateOf(s.pid), 'T');
      assert.notEqual(stateOf(s.pid), 't');
      s.prog.send('count');
      const a = Number((await s.prog.waitFor('COUNT')).split(' ')[1]);
      await sleep(30);
      s.prog.send('count');
      assert.ok(Number((await s.prog.waitFor('COUNT')).split(' ')[1]) > a, 'still counting');
    } finally {
      s.prog.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
