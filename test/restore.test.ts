/**
 * lazyrestore restore: a program with 256 MiB of patterned memory is dumped (and killed), restored lazily into
 * the same pid, and checks every page itself; its output goes on in the same file at the right offset. Then the
 * same image is restored again, eagerly and lazily (served from memory), and a restored task killed before it is
 * complete releases everything held for it.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ImageStore } from '../daemon/store/index.js';
import { dump, type ProcessRecord } from '../daemon/dump/index.js';
import { readMaps } from '../daemon/proc/index.js';
import { restoreImage, sourceCache } from '../daemon/restore/index.js';
import { keepAlive, killAll, leftOver, tempDir, Workload } from './support/restore.js';

const MIB = 256;
const tmp = tempDir('restore');
let store: ImageStore;
let workload: Workload;
let dumpedSize = 0;
let pid = 0;

/** The output must be READY, then tick 1..n without a gap or a repeat, then the check. */
function checkOutput(text: string, mib: number, minTicks = 3): number {
  const lines = text.split('\n');
  assert.match(lines[0] ?? '', new RegExp(`^READY \\d+ ${mib}$`));
  let n = 0;
  let i = 1;
  for (; i < lines.length && lines[i]!.startsWith('tick '); i++) assert.equal(lines[i], `tick ${++n}`);
  assert.ok(n >= minTicks, `at least ${minTicks} ticks before the check, got ${n}`);
  assert.equal(lines[i], `CHECK OK ${mib}`, `after tick ${n}: ${lines.slice(i).join(' | ')}`);
  assert.equal(lines[i + 1], 'DONE');
  return n;
}

/** The restored process has every dumped mapping where it was (same protection and file), and its identity. */
async function checkLayout(p: number): Promise<void> {
  const img = await store.loadImage('mem');
  const rec = img.meta.get(`process/${p}`) as ProcessRecord;
  const maps = readMaps(p);
  for (const v of rec.vmas) {
    const m = maps.find((x) => x.start <= v.start && x.end >= v.end);
    assert.ok(m, `mapping 0x${v.start.toString(16)}-0x${v.end.toString(16)} is missing`);
    const prot = (m.read ? 1 : 0) | (m.write ? 2 : 0) | (m.exec ? 4 : 0);
    assert.equal(prot, v.prot, `protection of 0x${v.start.toString(16)}`);
    if (v.file) assert.equal(m.path, v.file.path);
    if (v.content === 'vdso' || v.content === 'vvar' || v.content === 'vvar_vclock') assert.equal(m.kind, v.content);
  }
  assert.equal(maps.filter((m) => m.kind !== 'vsyscall').length <= rec.vmas.length, true, 'no mapping of ours is left');
  assert.equal(readlinkSync(`/proc/${p}/exe`), rec.exe.path);
  assert.equal(readFileSync(`/proc/${p}/comm`, 'utf8').trim(), rec.comm);
  assert.deepEqual(readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').slice(1, 3), [
    String(MIB),
    join(tmp.path, 'go'),
  ]);
  assert.ok(
    maps.some((m) => m.kind === 'heap') === rec.vmas.some((v) => v.kind === 'heap'),
    '[heap] is where brk says',
  );
  assert.ok(
    maps.some((m) => m.kind === 'stack'),
    '[stack] is where the dumped start_stack says',
  );
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
    await checkLayout(pid);
    const done = await keepAlive(tree.complete);
    t.diagnostic(
      `256 MiB lazy: running after ${running.toFixed(1)} ms, complete after ${done.completeMs.toFixed(1)} ms`,
    );
    t.diagnostic(
      `pages by fault ${done.faultPages}, in background ${done.backgroundPages}, eager bytes ${tree.eagerBytes}`,
    );
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
      else
        assert.ok(done.cachedBytes >= (MIB - 1) << 20, `second lazy restore found ${done.cachedBytes} bytes in memory`);
      const exit = await keepAlive(tree.exited);
      assert.deepEqual(exit, { pid, kind: 'exited', status: 0 });
      checkOutput(workload.output(), MIB);
    } finally {
      killAll([pid]);
    }
  }
});

test('a restored task that forks while its memory is still lazy gives the child the same memory', async () => {
  const go = join(tmp.path, 'go-fork');
  const w = new Workload(join(tmp.path, 'fork.txt'), 'restore_mem', ['64', go, 'fork']);
  let forkPid = 0;
  try {
    forkPid = await w.started();
    await w.waitOutput(/^tick 2$/m);
    await dump(store, forkPid, { name: 'mem-fork' });
    await w.reaped();
    // The go file exists: the program checks every page at once after a fork, racing the background copy.
    writeFileSync(go, '');
    const tree = await restoreImage(store, 'mem-fork');
    const done = await keepAlive(tree.complete);
    const exit = await keepAlive(tree.exited);
    assert.deepEqual(exit, { pid: forkPid, kind: 'exited', status: 0 }, w.output());
    assert.match(w.output(), /^CHILD OK$/m);
    checkOutput(w.output().replace('CHILD OK\n', ''), 64, 2);
    assert.deepEqual(done.errors, []);
  } finally {
    w.kill();
    killAll([forkPid]);
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
