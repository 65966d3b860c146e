/**
 * Restore of a process with credentials of its own (uids, gids, supplementary groups, no capabilities,
 * no_new_privs): they are given back last, after everything that needs privilege.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ImageStore } from '../daemon/store/index.js';
import { dump } from '../daemon/dump/index.js';
import { restoreImage } from '../daemon/restore/index.js';
import { keepAlive, killAll, tempDir, Workload } from './support/restore.js';

const tmp = tempDir('restore-creds');
after(() => tmp.remove());

test('uids, gids, groups, capabilities and no_new_privs survive a restore', async (t) => {
  if (process.getuid?.() !== 0) {
    t.skip('needs root to give the workload other credentials');
    return;
  }
  const store = await ImageStore.open(join(tmp.path, 'store'));
  const w = new Workload(join(tmp.path, 'out.txt'), 'restore_creds', []);
  let pid = 0;
  try {
    pid = await w.started();
    const before = (await w.waitOutput(/^IDS .*$/m))[0];
    assert.match(before, /^IDS 3000 3001 3002 2000 2001 2002 2:1234:5678 /);
    await dump(store, pid, { name: 'creds' });
    await w.reaped();
    const tree = await restoreImage(store, 'creds');
    await keepAlive(tree.complete);
    process.kill(pid, 'SIGUSR1');
    const exit = await keepAlive(tree.exited);
    assert.deepEqual(exit, { pid, kind: 'exited', status: 0 }, w.output());
    const lines = w.output().trimEnd().split('\n');
    assert.deepEqual(lines, [before, before, 'DONE']);
  } finally {
    w.kill();
    killAll([pid]);
    await store.close();
  }
});
