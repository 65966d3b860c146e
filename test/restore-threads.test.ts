/**
 * Restore of a multi-threaded process: threads blocked in futex waits (a condition variable, a mutex) and one
 * spinning with patterns in ymm0-15 and r12-r15 come back with their tids, stacks, TLS and registers intact.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ImageStore } from '../daemon/store/index.js';
import { dump } from '../daemon/dump/index.js';
import { restoreImage } from '../daemon/restore/index.js';
import { keepAlive, killAll, tempDir, Workload } from './support/restore.js';

const tmp = tempDir('restore-threads');
after(() => tmp.remove());

test('threads in futex waits and a spinning AVX thread keep their state', async () => {
  const store = await ImageStore.open(join(tmp.path, 'store'));
  const go = join(tmp.path, 'go');
  const w = new Workload(join(tmp.path, 'out.txt'), 'restore_threads', [go]);
  let pid = 0;
  try {
    pid = await w.started();
    const ready = await w.waitOutput(/^READY ((?:\d+ ?){6})$/m);
    const tids = ready[1]!.trim().split(' ').map(Number);
    const d = await dump(store, pid, { name: 'threads' });
    assert.equal(d.threads, 6);
    await w.reaped();
    const tree = await restoreImage(store, 'threads');
    const restoredTids = readdirSync(`/proc/${pid}/task`).map(Number);
    assert.deepEqual(restoredTids.sort(), [...tids].sort());
    await keepAlive(tree.complete);
    writeFileSync(go, '');
    const exit = await keepAlive(tree.exited);
    const out = w.output();
    assert.deepEqual(exit, { pid, kind: 'exited', status: 0 }, out);
    assert.match(out, /^REGS (ymm|xmm) OK$/m);
    for (let i = 0; i < 6; i++) assert.match(out, new RegExp(`^T${i} OK ${tids[i]}$`, 'm'));
    assert.match(out, /^DONE 0$/m);
  } finally {
    w.kill();
    killAll([pid]);
    await store.close();
  }
});
