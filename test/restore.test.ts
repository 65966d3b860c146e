/**
 * lazyrestore restore: a program with 256 MiB of patterned memory is dumped (and killed), restored lazily into
 * the same pid, and checks every page itself; its output goes on in the same file at the right offset. Then the
 * same image is restored again, eagerly and lazily (served from memory), and a restored task killed before it is
 * complete releases everything held for it.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ImageStore } from '../daemon/store/index.js';
import { dump } from '../daemon/dump/index.js';
import { restoreImage, sourceCache } from '../daemon/restore/index.js';
import { keepAlive, killAll, leftOver, tempDir, Workload } from './support/restore.js';

const MIB = 256;
const tmp = tempDir('restore');
let store: ImageStore;
let workload: Workload;
let dumpedSize = 0;
let pid = 0;

/** The output must be READY, then tick 1..n without a gap or a repeat, then the check. */
function checkOutput(text: string, mib: number): number {
  const lines = text.split('\n');
  assert.match(lines[0] ?? '', new RegExp(`^READY \\d+ ${mib}$`));
  let n = 0;
  let i = 1;
  for (; i < lines.length && lines[i]!.startsWith('tick '); i++) assert.equal(lines[i], `tick ${++n}`);
  assert.ok(n >= 3, `at least 3 ticks before the check, got ${n}`);
  assert.equal(lines[i], `CHECK OK ${mib}`, `after tick ${n}: ${lines.slice(i).join(' | ')}`);
  assert.equal(lines[i + 1], 'DONE');
  return n;
}

before(async () => {
  store = await ImageStore.open(join(tmp.path, 'store'));
  workload = new Workload(join(tmp.path, 'out.txt'), 'restore_mem', [String(MIB), join(tmp.path, 'go')]);
  pid = await workload.started();
  await workload.waitOutput(/^tick 3$/m);
  await dump(store, pid, { name: 'mem' });
  await workload.reaped();
  dumpedSize = workload.output().length;
});

after(async () => {
  workload?.kill();
  killAll([pid]);
  await store?.close();
  tmp.remove();
});

test('a 256 MiB program restored lazily runs at once and checks every page', async (t) => {
  const t0 = performance.now();
  const tree = await restoreImage(store, 'mem');
  try {
    assert.equal(tree.rootPid, pid);
    assert.equal(tree.lazy, true);
    const running = performance.now() - t0;
    const done = await keepAlive(tree.complete);
    t.diagnostic(`256 MiB lazy: running after ${running.toFixed(1)} ms, complete after ${done.completeMs.toFixed(1)} ms`);
    t.diagnostic(`pages by fault ${done.faultPages}, in background ${done.backgroundPages}, eager bytes ${tree.eagerBytes}`);
    assert.equal(done.faultPages + done.backgroundPages >= (MIB << 20) / 4096, true);
    assert.deepEqual(done.errors, []);
    // Still ticking after the restore, then the check on the go file.
    await workload.waitOutput(/^tick 5$/m);
    writeFileSync(join(tmp.path, 'go'), '');
    const exit = await keepAlive(tree.exited);
    assert.deepEqual(exit, { pid, kind: 'exited', status: 0 });
    checkOutput(workload.output(), MIB);
  } finally {
    killAll([pid]);
  }
});

test('the same image restores again once the first copy has exited: eagerly, then lazily from memory', async () => {
  for (const eager of [true, false]) {
    // The output file is put back as it was at the dump (restore refuses a file whose size changed).
    truncateSync(workload.out, dumpedSize);
    const go = join(tmp.path, 'go');
    writeFileSync(go, '');
    const tree = await restoreImage(store, 'mem', { eager });
    try {
      const done = await keepAlive(tree.complete);
      if (eager) assert.ok(tree.eagerBytes >= (MIB - 1) << 20, `eager restore wrote ${tree.eagerBytes} bytes`);
      else assert.ok(done.cachedBytes >= (MIB - 1) << 20, `second lazy restore found ${done.cachedBytes} bytes in memory`);
      const exit = await keepAlive(tree.exited);
      assert.deepEqual(exit, { pid, kind: 'exited', status: 0 });
      checkOutput(workload.output(), MIB);
    } finally {
      killAll([pid]);
    }
  }
});

test('a restored task killed before it is complete releases everything held for it', async () => {
  truncateSync(workload.out, dumpedSize);
  sourceCache.limitBytes = 0; // nothing kept once unused
  const tree = await restoreImage(store, 'mem');
  process.kill(pid, 'SIGKILL');
  const exit = await keepAlive(tree.exited);
  assert.equal(exit.kind, 'signaled');
  const done = await keepAlive(tree.complete);
  assert.deepEqual(done.errors, []);
  assert.deepEqual(await leftOver([pid]), []);
  assert.equal(sourceCache.bytes, 0);
});
