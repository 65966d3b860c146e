/**
 * Open file descriptions survive a dump and a restore: fds that shared one description (stdout and stderr
 * after `2>&1`) share one again, so a program writing through both keeps one offset and never overwrites its
 * own output.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { native } from '../native/index.js';
import { ImageStore } from '../daemon/store/index.js';
import { dump, type ProcessRecord } from '../daemon/dump/index.js';
import { restoreImage } from '../daemon/restore/index.js';
import { keepAlive, killAll, tempDir, Workload } from './support/restore.js';

const tmp = tempDir('restore-files');
let store: ImageStore;

before(async () => {
  store = await ImageStore.open(join(tmp.path, 'store'));
});

after(async () => {
  await store?.close();
  tmp.remove();
});

/** Lines must be READY, then out 1, err 1, out 2, err 2, ... without a gap, a repeat or a torn line, then DONE. */
function checkInterleaved(text: string): number {
  const lines = text.split('\n');
  assert.match(lines[0] ?? '', /^READY \d+$/);
  let n = 0;
  let i = 1;
  while (lines[i]?.startsWith('out ')) {
    n++;
    assert.equal(lines[i], `out ${n}`, `line ${i}`);
    assert.equal(lines[i + 1], `err ${n}`, `line ${i + 1}`);
    i += 2;
  }
  assert.equal(lines[i], 'DONE 0', `after ${n} pairs: ${lines.slice(i, i + 3).join(' | ')}`);
  return n;
}

test('stdout and stderr sharing one open file description share it again after restore', async () => {
  const go = join(tmp.path, 'go');
  const w = new Workload(join(tmp.path, 'out.txt'), 'restore_shared_fd', [go]);
  let pid = 0;
  try {
    pid = await w.started();
    await w.waitOutput(/^err 3$/m);
    await dump(store, pid, { name: 'shared-fd' });
    await w.reaped();

    const img = await store.loadImage('shared-fd');
    const rec = img.meta.get(`process/${pid}`) as ProcessRecord;
    const out = rec.fds.find((f) => f.fd === 1);
    const err = rec.fds.find((f) => f.fd === 2);
    assert.ok(out?.description !== undefined, 'fd 1 records its description');
    assert.equal(err?.description, out.description, 'fd 1 and fd 2 share one description in the image');
    assert.equal(
      rec.fds.find((f) => f.fd === 0)?.description,
      undefined,
      'stdin (/dev/null opened on its own) shares nothing',
    );

    const tree = await restoreImage(store, 'shared-fd');
    try {
      assert.equal(native.kcmpFiles(pid, 1, pid, 2), 0, 'restored fds 1 and 2 are one description');
      const before = w.output().length;
      await w.waitOutput(new RegExp(`^err ${Number(/err (\d+)\n$/.exec(w.output())?.[1] ?? 0) + 3}$`, 'm'));
      assert.ok(w.output().length > before, 'the restored program goes on writing');
      writeFileSync(go, '');
      const exit = await keepAlive(tree.exited);
      assert.deepEqual(exit, { pid, kind: 'exited', status: 0 });
      assert.ok(checkInterleaved(w.output()) >= 6);
    } finally {
      killAll([pid]);
    }
  } finally {
    w.kill();
    killAll([pid]);
  }
});

test('kcmpFiles tells shared descriptions apart and reports errors like a system error', () => {
  // Our own stdout and stderr: whatever they are, a fd is always its own description.
  assert.equal(native.kcmpFiles(process.pid, 1, process.pid, 1), 0);
  assert.throws(() => native.kcmpFiles(process.pid, 1, process.pid, 987654), { code: 'EBADF', syscall: 'kcmp' });
});
