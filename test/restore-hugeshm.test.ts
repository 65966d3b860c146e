/**
 * Lazy restore of shared hugetlb memory: a parent and two children share a 16 MiB MAP_SHARED|MAP_ANONYMOUS|
 * MAP_HUGETLB mapping and an 8 MiB MFD_HUGETLB memfd (2 MiB pages, some never touched). Each is a shared object with
 * a huge page size: dumped once, created once at restore, mapped by all three (one inode) and filled a whole huge
 * page at a time, once per huge page, through whichever task faults first (UFFD_FEATURE_MISSING_HUGETLBFS). The
 * processes exchange writes through both and verify every page; with events, MADV_REMOVE of a huge page reads zero in
 * all, MADV_DONTNEED and munmap in one keep the data for the others; a partial MADV_REMOVE of a lazy huge page kills
 * the tree with a named error. The same image restores eagerly, and the huge page check counts each object once.
 * A file on a hugetlbfs mount mapped shared comes back as a file mapping (its data stays in the file).
 * Huge pages are reserved through /proc/sys/vm/nr_hugepages and the previous value put back; the tests skip, saying
 * why, when they cannot be had.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ImageStore } from '../daemon/store/index.js';
import { dump, type ProcessRecord, type ShmemRecord } from '../daemon/dump/index.js';
import { readMaps } from '../daemon/proc/index.js';
import { LAZY_FEATURES, restoreImage } from '../daemon/restore/index.js';
import { loadImageOrThrow } from '../daemon/restore/image.js';
import { checkHugePages, planLazyShmem } from '../daemon/restore/memory.js';
import { isLazyRestoreError } from '../daemon/errors.js';
import { UFFD_FEATURES } from '../native/index.js';
import {
  assertTreeVerified,
  dumpTree,
  keepAlive,
  killAll,
  leftOver,
  startTree,
  tempDir,
  Workload,
  type DumpedTree,
  type StartedTree,
} from './support/restore.js';
import { HUGE, HugePages } from './support/hugepages.js';

const MIB = 16;
/** Huge pages of the two objects: 8 of the anonymous one, 4 of the memfd. */
const NEEDED = MIB / 2 + 4;
const tmp = tempDir('restore-hugeshm');
const pool = new HugePages();
let store: ImageStore;
/** The tree of the first test, restored again eagerly. */
let first: DumpedTree | null = null;

before(async () => {
  store = await ImageStore.open(join(tmp.path, 'store'));
  pool.reserve(NEEDED);
});

after(async () => {
  pool.release();
  await store?.close();
  tmp.remove();
});

function startHugeShm(name: string, mode?: string): Promise<StartedTree> {
  return startTree(tmp.path, name, 'restore_hugeshm', (go) => [String(MIB), go, ...(mode ? [mode] : [])]);
}

async function dumpHugeShm(name: string, mode?: 'events' | 'partial'): Promise<DumpedTree> {
  return dumpTree(store, await startHugeShm(name, mode), name);
}

/** The hugetlb objects one process maps, by inode: the same inodes in every process mean one object each. */
function hugeInodes(pid: number): string[] {
  return [
    ...new Set(
      readMaps(pid)
        .filter((v) => v.path === '/anon_hugepage' || v.path.startsWith('/memfd:lr-hugeshm'))
        .map((v) => `${v.path}:${v.inode}`),
    ),
  ].sort();
}

test('a tree sharing MAP_SHARED|MAP_HUGETLB memory and an MFD_HUGETLB memfd is restored lazily and exchanges writes', async (t) => {
  if (pool.skip) return t.skip(pool.skip);
  first = await dumpHugeShm('hugeshm');
  const { w, pids, go } = first;
  const img = await store.loadImage('hugeshm');
  const objects = [...img.meta.entries()].filter(([k]) => k.startsWith('shmem/')).map(([, v]) => v as ShmemRecord);
  assert.equal(objects.length, 2, 'one record per shared object, not per process');
  for (const o of objects) assert.match(o.id, /^hugetlb-\d+$/, 'ids apart from those of shmem objects');
  assert.deepEqual(objects.map((o) => [o.kind ?? 'anon', o.size, o.hugePageSize]).sort(), [
    ['anon', MIB << 20, HUGE],
    ['memfd', 4 * HUGE, HUGE],
  ]);
  try {
    const t0 = performance.now();
    const tree = await restoreImage(store, 'hugeshm');
    const running = performance.now() - t0;
    assert.equal(tree.lazy, true);
    assert.deepEqual(
      tree.notes.filter((n) => /shared|hugetlb/.test(n)),
      [],
    );
    assert.ok(tree.eagerBytes < HUGE, `no huge page written before running, got ${tree.eagerBytes} bytes`);
    const inodes = hugeInodes(pids[0]!);
    assert.equal(inodes.length, 2, inodes.join(' '));
    for (const p of pids.slice(1)) assert.deepEqual(hugeInodes(p), inodes);
    writeFileSync(go, '');
    const done = await keepAlive(tree.complete);
    const exit = await keepAlive(tree.exited);
    t.diagnostic(
      `16 MiB + 8 MiB shared hugetlb, 3 processes, lazy: running after ${running.toFixed(1)} ms, complete after ` +
        `${done.completeMs.toFixed(1)} ms; pages by fault ${done.faultPages}, in background ${done.backgroundPages}`,
    );
    assert.deepEqual(exit, { pid: pids[0], kind: 'exited', status: 0 }, w.output());
    assertTreeVerified(w.output());
    assert.deepEqual(done.errors, []);
    // Each huge page of the objects (12 × 512 pages) is placed once, through one of the three tasks.
    const placed = done.faultPages + done.backgroundPages;
    assert.ok(placed >= 12 * 512 && placed < 2 * 12 * 512, `${placed} pages placed`);
  } finally {
    w.kill();
    killAll(pids);
  }
});

test('the same image restores eagerly: the objects are written through a mapping before the tree runs', async (t) => {
  if (pool.skip) return t.skip(pool.skip);
  if (!first) return t.skip('needs the image of the first test');
  const { w, pids, size, go } = first;
  truncateSync(w.out, size); // as at the dump
  writeFileSync(go, ''); // (made by the first test too, unless it failed before: the tree would wait for it)
  try {
    const tree = await restoreImage(store, 'hugeshm', { eager: true });
    assert.equal(tree.lazy, false);
    // Data in 6 huge pages of the anonymous object and 2 of the memfd.
    assert.ok(tree.eagerBytes >= 8 * HUGE, `eager restore wrote ${tree.eagerBytes} bytes`);
    const exit = await keepAlive(tree.exited);
    assert.deepEqual(exit, { pid: pids[0], kind: 'exited', status: 0 }, w.output());
    assertTreeVerified(w.output());
  } finally {
    killAll(pids);
  }
});

test('without UFFD_FEATURE_MISSING_HUGETLBFS the objects are eager, and the summary says so', async (t) => {
  if (pool.skip) return t.skip(pool.skip);
  if (!first) return t.skip('needs the image of the first test');
  const img = await loadImageOrThrow(store, 'hugeshm');
  const notes: string[] = [];
  const shmemOnly = LAZY_FEATURES | UFFD_FEATURES.UFFD_FEATURE_MISSING_SHMEM;
  assert.equal(planLazyShmem(img, false, shmemOnly, notes).size, 0);
  assert.deepEqual(notes, [
    "shared hugetlb memory (2 object(s), 24.0 MiB) restored eagerly: this kernel's userfaultfd lacks " +
      'UFFD_FEATURE_MISSING_HUGETLBFS',
  ]);
  const huge = LAZY_FEATURES | UFFD_FEATURES.UFFD_FEATURE_MISSING_HUGETLBFS;
  assert.equal(planLazyShmem(img, false, huge, []).size, 2, 'MISSING_SHMEM is not needed for hugetlb objects');
  assert.equal(planLazyShmem(img, true, huge, []).size, 0, '--eager leaves nothing lazy');
});

test('the huge page check counts a shared object once, not once per mapping', async (t) => {
  if (pool.skip) return t.skip(pool.skip);
  if (!first) return t.skip('needs the image of the first test');
  const img = await loadImageOrThrow(store, 'hugeshm');
  checkHugePages(img, () => NEEDED); // three processes map both objects: 3 × 12 if counted per mapping
  assert.throws(
    () => checkHugePages(img, () => NEEDED - 1),
    (e: unknown) => {
      assert.ok(isLazyRestoreError(e));
      assert.equal(e.code, 'HUGE_PAGES_UNAVAILABLE');
      assert.match(
        e.message,
        new RegExp(`maps ${NEEDED} huge page\\(s\\) of 2048 KiB \\(first: shared object hugetlb-\\d+\\)`),
      );
      return true;
    },
  );
});

/** Restores an events image with the background copy off; an madvise(2) that raced the service's scan of the
 *  threads is a correct outcome (the tree is killed with a named error), and the scenario is tried again. */
async function restoreEvents(
  t: { diagnostic: (s: string) => void },
  mode: 'events' | 'partial',
  check: (d: DumpedTree, exit: unknown, done: unknown) => void,
): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    const d = await dumpHugeShm(`hugeshm-${mode}-${attempt}`, mode);
    try {
      writeFileSync(d.go, '');
      // Without background copy the huge pages the events hit are still lazy when they happen.
      const tree = await restoreImage(store, `hugeshm-${mode}-${attempt}`, { background: false });
      const exit = await keepAlive(tree.exited);
      const done = await keepAlive(tree.complete).catch((e: unknown) => e as Error);
      if (done instanceof Error && /the call raced the scan/.test(done.message) && attempt < 3) {
        t.diagnostic(`attempt ${attempt}: ${done.message}`);
        continue;
      }
      check(d, exit, done);
      return;
    } finally {
      d.w.kill();
      killAll(d.pids);
      await leftOver(d.pids);
    }
  }
}

test('MADV_REMOVE, MADV_DONTNEED and munmap of lazy shared huge pages keep every process exact', async (t) => {
  if (pool.skip) return t.skip(pool.skip);
  await restoreEvents(t, 'events', ({ w, pids }, exit, done) => {
    if (done instanceof Error) throw done;
    assert.deepEqual(exit, { pid: pids[0], kind: 'exited', status: 0 }, w.output());
    assertTreeVerified(w.output());
    assert.deepEqual((done as { errors: string[] }).errors, []);
  });
});

test('MADV_REMOVE of part of a lazy shared huge page kills the tree, naming why', async (t) => {
  if (pool.skip) return t.skip(pool.skip);
  await restoreEvents(t, 'partial', ({ w, pids }, exit, done) => {
    assert.ok(isLazyRestoreError(done), String(done));
    assert.equal(done.code, 'RESTORE_FAILED');
    assert.match(
      done.message,
      /lazy memory is no longer certain: .*MADV_REMOVE of part of a huge page of a shared object that is still lazy/,
    );
    assert.deepEqual(exit, { pid: pids[0], kind: 'signaled', signal: 9, coreDumped: false });
    assert.doesNotMatch(w.output(), /VERIFY OK parent/);
  });
});

test('a private mapping of an MFD_HUGETLB memfd is refused at dump, naming it', async (t) => {
  if (pool.skip) return t.skip(pool.skip);
  const { w, pids } = await startHugeShm('hugeshm-private', 'private');
  try {
    await assert.rejects(dump(store, pids[0]!, { name: 'hugeshm-private' }), (e: unknown) => {
      assert.ok(isLazyRestoreError(e));
      assert.equal(e.code, 'UNSUPPORTED_MAPPING');
      assert.match(e.message, /is a private mapping of a memfd \(\/memfd:lr-hugeshm\)/);
      return true;
    });
    for (const p of pids) assert.ok(existsSync(`/proc/${p}`), 'the refused tree runs on');
  } finally {
    w.kill();
    killAll(pids);
  }
});

/** Reads `len` bytes of `path` at `pos` (read(2) works on hugetlbfs files). */
function readAt(path: string, pos: number, len: number): string {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(len);
    readSync(fd, buf, 0, len, pos);
    return buf.toString();
  } finally {
    closeSync(fd);
  }
}

test('a hugetlbfs file mapped shared is restored as a mapping of the file; mapped private it is refused', async (t) => {
  if (pool.skip) return t.skip(pool.skip);
  const mnt = join(tmp.path, 'hugetlbfs');
  mkdirSync(mnt);
  try {
    execFileSync('mount', ['-t', 'hugetlbfs', '-o', 'pagesize=2M', 'none', mnt], { stdio: 'pipe' });
  } catch (e) {
    return t.skip(`cannot mount hugetlbfs: ${(e as Error).message}`);
  }
  const file = join(mnt, 'data');
  const go = join(tmp.path, 'go-hugefile');
  const w = new Workload(join(tmp.path, 'hugefile.txt'), 'restore_hugefile', [file, go]);
  const p = new Workload(join(tmp.path, 'hugefile-private.txt'), 'restore_hugefile', [
    `${file}-private`,
    `${go}-private`,
    'private',
  ]);
  let pid = 0;
  try {
    await w.started();
    pid = Number((await w.waitOutput(/^READY (\d+)$/m))[1]);
    await dump(store, pid, { name: 'hugefile' });
    await w.reaped();
    const img = await store.loadImage('hugefile');
    const rec = img.meta.get(`process/${pid}`) as ProcessRecord;
    const vma = rec.vmas.find((v) => v.file?.path === file);
    assert.ok(vma, 'the mapping of the file is in the image');
    assert.equal(vma.content, 'file');
    assert.equal(vma.shared, true);
    const space = img.summary.addressSpaces.find((a) => a.mmId === `mm:${pid}`)!;
    assert.ok(space.bytes < HUGE, `no page data of the file is stored (${space.bytes} bytes)`);
    writeFileSync(go, '');
    const tree = await restoreImage(store, 'hugefile');
    const exit = await keepAlive(tree.exited);
    assert.deepEqual(exit, { pid, kind: 'exited', status: 0 }, w.output());
    assert.match(w.output(), /^FILE OK$/m);
    assert.equal(readAt(file, HUGE, 16), 'RESTORED MAPPING', 'the restored mapping writes into the file');

    await p.started();
    const ppid = Number((await p.waitOutput(/^READY (\d+)$/m))[1]);
    await assert.rejects(dump(store, ppid, { name: 'hugefile-private' }), (e: unknown) => {
      assert.ok(isLazyRestoreError(e));
      assert.equal(e.code, 'UNSUPPORTED_MAPPING');
      assert.match(
        e.message,
        /is a private mapping of the hugetlbfs file .*data-private, which restore does not recreate/,
      );
      return true;
    });
  } finally {
    w.kill();
    p.kill();
    killAll([pid]);
    await leftOver([pid, p.pid]);
    rmSync(file, { force: true });
    rmSync(`${file}-private`, { force: true });
    execFileSync('umount', ['-l', mnt]);
  }
});
