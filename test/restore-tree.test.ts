/**
 * Restore of a process tree: a session leader with a child in its group and a child in a group of its own (with a
 * child of its own), pipes holding unread data, files at offsets and in O_APPEND mode, cwd, umask, a resource
 * limit, an alternate signal stack, pending real-time signals (process-wide and per thread) and a handler
 * installed before the dump that runs after it, and a zombie child its parent reaps after the restore.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ImageStore } from '../daemon/store/index.js';
import { dump } from '../daemon/dump/index.js';
import { restoreImage } from '../daemon/restore/index.js';
import { keepAlive, killAll, leftOver, tempDir, until, Workload } from './support/restore.js';

const tmp = tempDir('restore-tree');
after(() => tmp.remove());

interface Ids {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
}

function idsOf(text: string, kind: 'UP' | 'IDS'): Map<string, Ids> {
  const out = new Map<string, Ids>();
  const re = kind === 'UP' ? /^UP (\w) (\d+) (\d+) (\d+) (\d+)$/gm : /^(\w) IDS (\d+) (\d+) (\d+) (\d+)$/gm;
  for (const m of text.matchAll(re)) {
    out.set(m[1]!, { pid: Number(m[2]), ppid: Number(m[3]), pgid: Number(m[4]), sid: Number(m[5]) });
  }
  return out;
}

test('a forked tree with pipes, files and pending signals comes back whole', async () => {
  const store = await ImageStore.open(join(tmp.path, 'store'));
  const report = join(tmp.path, 'report');
  const work = join(tmp.path, 'work');
  mkdirSync(work);
  const w = new Workload(join(tmp.path, 'out.txt'), 'restore_tree', [report, work]);
  const text = () => (existsSync(report) ? readFileSync(report, 'utf8') : '');
  let pids: number[] = [];
  try {
    await w.started();
    const before = await until('four UP lines', () => {
      const ids = idsOf(text(), 'UP');
      return ids.size === 4 ? ids : undefined;
    });
    const zombie = await until('the zombie', () => {
      const m = /^ZOMBIE (\d+)$/m.exec(text());
      return m ? Number(m[1]) : undefined;
    });
    pids = [...[...before.values()].map((i) => i.pid), zombie];
    const root = before.get('R')!;
    const d = await dump(store, root.pid, { name: 'tree' });
    assert.equal(d.processes, 5);
    // The dump killed the tree; the children of the killed root are reaped by init.
    await w.reaped();
    assert.deepEqual(await leftOver(pids), []);

    const tree = await restoreImage(store, 'tree');
    assert.deepEqual(tree.notes, [], 'the root leads its own session: nothing is outside the tree');
    assert.deepEqual(tree.processes.map((p) => p.pid).sort(), [...pids].sort());
    await keepAlive(tree.complete);
    // The SIGUSR1 handler was installed before the dump.
    process.kill(root.pid, 'SIGUSR1');
    const exit = await keepAlive(tree.exited);
    const out = text();
    assert.deepEqual(exit, { pid: root.pid, kind: 'exited', status: 0 }, out);
    assert.doesNotMatch(out, /FAIL/);
    assert.match(out, /^A PIPE OK hello-pipe-data$/m);
    assert.match(out, /^C PIPE OK from-B$/m);
    assert.match(out, /^R ZOMBIE OK 1792$/m); // exit status 7, kept by the restored zombie
    assert.match(out, /^DONE 0$/m);
    const afterIds = idsOf(out, 'IDS');
    for (const role of ['R', 'A', 'B', 'C']) {
      const want = { ...before.get(role)! };
      if (role === 'R') want.ppid = process.pid; // the restored root is a child of the restoring process
      assert.deepEqual(afterIds.get(role), want, `ids of ${role}`);
    }
    assert.equal(readFileSync(join(work, 'file-a'), 'utf8'), 'a'.repeat(100) + 'Z' + 'a'.repeat(49));
  } finally {
    w.kill();
    // Whatever the test got to: every process that reported in, and the zombie's parent's children.
    killAll([...pids, ...[...idsOf(text(), 'UP').values()].map((i) => i.pid)]);
    await store.close();
  }
});
