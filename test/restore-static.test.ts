/**
 * The simplest case, restored eagerly: a single-threaded, statically linked, non-PIE loop (loaded at 0x400000,
 * where the restorer helper itself is loaded) continues counting with its heap, data and output offset intact.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ImageStore } from '../daemon/store/index.js';
import { dump } from '../daemon/dump/index.js';
import { readMaps } from '../daemon/proc/index.js';
import { restoreImage } from '../daemon/restore/index.js';
import { programPath } from './support/programs.js';
import { keepAlive, killAll, tempDir, Workload } from './support/restore.js';

const tmp = tempDir('restore-static');
after(() => tmp.remove());

test('a static non-PIE loop restored eagerly continues where it was', async () => {
  const store = await ImageStore.open(join(tmp.path, 'store'));
  const go = join(tmp.path, 'go');
  const w = new Workload(join(tmp.path, 'out.txt'), 'restore_static', [go]);
  let pid = 0;
  try {
    pid = await w.started();
    await w.waitOutput(/^n 5 /m);
    assert.ok(
      readMaps(pid).some((m) => m.start === 0x400000),
      'loaded at 0x400000',
    );
    await dump(store, pid, { name: 'static' });
    await w.reaped();
    const dumpedTicks = w.output().trimEnd().split('\n').length;
    const tree = await restoreImage(store, 'static', { eager: true });
    assert.equal(tree.lazy, false);
    assert.equal(readlinkSync(`/proc/${pid}/exe`), programPath('restore_static'));
    await w.waitOutput(new RegExp(`^n ${dumpedTicks + 5} `, 'm'));
    writeFileSync(go, '');
    const exit = await keepAlive(tree.exited);
    assert.deepEqual(exit, { pid, kind: 'exited', status: 0 }, w.output());
    const lines = w.output().trimEnd().split('\n');
    const ticks = lines.length - 2;
    lines.slice(0, ticks).forEach((l, i) => assert.match(l, new RegExp(`^n ${i + 1} \\d+$`)));
    assert.deepEqual(lines.slice(ticks), [`SUM OK ${ticks}`, 'DONE']);
  } finally {
    w.kill();
    killAll([pid]);
    await store.close();
  }
});
