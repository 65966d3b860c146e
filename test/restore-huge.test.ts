/**
 * Lazy restore of hugetlb memory (UFFD_FEATURE_MISSING_HUGETLBFS): a program with 16 MiB of private MAP_HUGETLB
 * memory in 2 MiB pages is dumped and restored lazily, its huge pages copied whole, and verifies them itself; with
 * MADV_DONTNEED and munmap of lazy huge pages too; the same memory mapped shared is a shared object; and a host
 * without free huge pages refuses the restore before anything runs. The test reserves the huge pages through
 * /proc/sys/vm/nr_hugepages and puts the previous value back afterwards (test/support/hugepages.ts); it skips,
 * saying why, when it cannot get them.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ImageStore } from '../daemon/store/index.js';
import { dump, type ProcessRecord } from '../daemon/dump/index.js';
import { restoreImage } from '../daemon/restore/index.js';
import { availableHugePages, planLazyHuge } from '../daemon/restore/memory.js';
import { loadImageOrThrow } from '../daemon/restore/image.js';
import { LAZY_FEATURES } from '../daemon/restore/index.js';
import { isLazyRestoreError } from '../daemon/errors.js';
import { UFFD_FEATURES } from '../native/index.js';
import { keepAlive, killAll, leftOver, tempDir, Workload } from './support/restore.js';
import { HUGE, HugePages, nrHugePages, setNrHugePages } from './support/hugepages.js';

const MIB = 16;
const NEEDED = MIB / 2;
const tmp = tempDir('restore-huge');
const pool = new HugePages();
let store: ImageStore;
/** The program of the first test, restored again eagerly. */
let first: { w: Workload; pid: number; size: number } | null = null;

before(async () => {
  store = await ImageStore.open(join(tmp.path, 'store'));
  pool.reserve(NEEDED);
});

after(async () => {
  pool.release();
  await store?.close();
  tmp.remove();
});

async function dumpHuge(
  name: string,
  events: boolean | 'fork' | 'shared',
): Promise<{ w: Workload; pid: number; go: string; size: number }> {
  const go = join(tmp.path, `go-${name}`);
  const w = new Workload(join(tmp.path, `${name}.txt`), 'restore_huge', [
    String(MIB),
    go,
    ...(typeof events === 'string' ? [events] : events ? ['events'] : []),
  ]);
  await w.started();
  const pid = Number((await w.waitOutput(/^READY (\d+)$/m))[1]);
  await dump(store, pid, { name });
  await w.reaped();
  assert.deepEqual(await leftOver([pid]), []);
  return { w, pid, go, size: w.output().length };
}

test('a program with 2 MiB huge pages is restored lazily and verifies its memory', async (t) => {
  if (pool.skip) return t.skip(pool.skip);
  const { w, pid, go, size } = await dumpHuge('huge', false);
  first = { w, pid, size };
  const img = await store.loadImage('huge');
  const rec = img.meta.get(`process/${pid}`) as ProcessRecord;
  const vma = rec.vmas.find((v) => v.hugePageSize !== undefined);
  assert.ok(vma, 'the hugetlb mapping is in the image');
  assert.equal(vma.hugePageSize, HUGE);
  assert.equal(vma.end - vma.start, MIB << 20);
  // Seven huge pages were touched (one of them zeros), the last never: 6 × 2 MiB of data are stored.
  const space = img.summary.addressSpaces.find((a) => a.mmId === `mm:${pid}`)!;
  assert.ok(space.bytes >= 6 * HUGE, `${space.bytes} bytes of page data`);
  assert.ok(space.zeroPages >= HUGE / 4096, `${space.zeroPages} zero pages`);
  try {
    const t0 = performance.now();
    const tree = await restoreImage(store, 'huge');
    const running = performance.now() - t0;
    assert.equal(tree.lazy, true);
    assert.deepEqual(
      tree.notes.filter((n) => /hugetlb/.test(n)),
      [],
    );
    assert.ok(tree.eagerBytes < HUGE, `no huge page written before running, got ${tree.eagerBytes} bytes`);
    writeFileSync(go, '');
    const done = await keepAlive(tree.complete);
    const exit = await keepAlive(tree.exited);
    t.diagnostic(
      `16 MiB of huge pages, lazy: running after ${running.toFixed(1)} ms, complete after ${done.completeMs.toFixed(1)} ms`,
    );
    assert.deepEqual(exit, { pid, kind: 'exited', status: 0 }, w.output());
    assert.match(w.output(), /^HUGE OK$/m);
    assert.deepEqual(done.errors, []);
  } finally {
    w.kill();
    killAll([pid]);
  }
});

test('the same image restores eagerly (the fallback without MISSING_HUGETLBFS), noted when the feature lacks', async (t) => {
  if (pool.skip) return t.skip(pool.skip);
  if (!first) return t.skip('needs the image of the first test');
  const { w, pid, size } = first;
  const img = await loadImageOrThrow(store, 'huge');
  const notes: string[] = [];
  assert.equal(planLazyHuge(img, false, LAZY_FEATURES, notes), false);
  assert.deepEqual(notes, [
    "hugetlb memory (16.0 MiB) restored eagerly: this kernel's userfaultfd lacks UFFD_FEATURE_MISSING_HUGETLBFS",
  ]);
  assert.equal(planLazyHuge(img, false, LAZY_FEATURES | UFFD_FEATURES.UFFD_FEATURE_MISSING_HUGETLBFS, []), true);
  truncateSync(w.out, size); // as at the dump; the go file exists
  try {
    const tree = await restoreImage(store, 'huge', { eager: true });
    assert.ok(tree.eagerBytes >= 6 * HUGE, `eager restore wrote ${tree.eagerBytes} bytes`);
    const exit = await keepAlive(tree.exited);
    assert.deepEqual(exit, { pid, kind: 'exited', status: 0 }, w.output());
    assert.match(w.output(), /^HUGE OK$/m);
  } finally {
    killAll([pid]);
  }
});

test('MADV_DONTNEED and munmap of lazy huge pages keep the lazy state exact', async (t) => {
  if (pool.skip) return t.skip(pool.skip);
  const { w, pid, go } = await dumpHuge('huge-events', true);
  try {
    writeFileSync(go, '');
    // No background copy: the huge pages the events hit are still lazy when they happen.
    const tree = await restoreImage(store, 'huge-events', { background: false });
    const exit = await keepAlive(tree.exited);
    const done = await keepAlive(tree.complete);
    assert.deepEqual(exit, { pid, kind: 'exited', status: 0 }, w.output());
    assert.match(w.output(), /^HUGE OK$/m);
    // Every huge page the program read came by a fault (7 of 8 are read; its other memory faults too).
    assert.ok(done.faultPages >= 7, `faults: ${done.faultPages}`);
    assert.deepEqual(done.errors, []);
  } finally {
    w.kill();
    killAll([pid]);
  }
});

test('a restored task that forks while its huge pages are lazy gives the child the same memory', async (t) => {
  if (pool.skip) return t.skip(pool.skip);
  const { w, pid, go } = await dumpHuge('huge-fork', 'fork');
  try {
    writeFileSync(go, '');
    const tree = await restoreImage(store, 'huge-fork', { background: false });
    const exit = await keepAlive(tree.exited);
    const done = await keepAlive(tree.complete);
    assert.deepEqual(exit, { pid, kind: 'exited', status: 0 }, w.output());
    assert.match(w.output(), /^CHILD HUGE OK$/m);
    assert.match(w.output(), /^HUGE OK$/m);
    assert.deepEqual(done.errors, []);
  } finally {
    w.kill();
    killAll([pid]);
  }
});

test('shared hugetlb memory of one process is dumped as a shared object and restored lazily', async (t) => {
  if (pool.skip) return t.skip(pool.skip);
  const { w, pid, go } = await dumpHuge('huge-shared', 'shared');
  try {
    const img = await store.loadImage('huge-shared');
    const rec = img.meta.get(`process/${pid}`) as ProcessRecord;
    const vma = rec.vmas.find((v) => v.hugePageSize !== undefined)!;
    assert.equal(vma.content, 'shmem');
    assert.ok(img.meta.has(`shmem/${vma.shmem}`), 'the object has its record');
    writeFileSync(go, '');
    const tree = await restoreImage(store, 'huge-shared');
    const exit = await keepAlive(tree.exited);
    const done = await keepAlive(tree.complete);
    assert.deepEqual(exit, { pid, kind: 'exited', status: 0 }, w.output());
    assert.match(w.output(), /^HUGE OK$/m);
    assert.deepEqual(done.errors, []);
  } finally {
    w.kill();
    killAll([pid]);
  }
});

test('without free huge pages the restore is refused before anything runs', async (t) => {
  if (pool.skip) return t.skip(pool.skip);
  const { w, pid, size } = await dumpHuge('huge-none', false);
  truncateSync(w.out, size);
  const total = nrHugePages();
  try {
    // Give back every free huge page (those in use elsewhere stay).
    setNrHugePages(total - availableHugePages(HUGE));
    if (availableHugePages(HUGE) >= NEEDED) return t.skip('the free huge pages could not be given back');
    await assert.rejects(restoreImage(store, 'huge-none'), (e: unknown) => {
      assert.ok(isLazyRestoreError(e));
      assert.equal(e.code, 'HUGE_PAGES_UNAVAILABLE');
      assert.match(e.message, new RegExp(`maps ${NEEDED} huge page\\(s\\) of 2048 KiB \\(first: process ${pid} at 0x`));
      return true;
    });
    assert.equal(existsSync(`/proc/${pid}`), false, 'no process was created');
  } finally {
    setNrHugePages(total);
    w.kill();
    killAll([pid]);
  }
});
