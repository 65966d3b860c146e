/**
 * Lazy restore of shared memory: a parent and two children share a 64 MiB MAP_SHARED|MAP_ANONYMOUS mapping and a
 * memfd. After a lazy restore (UFFD_FEATURE_MISSING_SHMEM) the objects are created once, mapped by all three and
 * filled page by page through whichever task faults first; the processes then exchange writes through them and
 * verify every page. With events: a hole punched by MADV_REMOVE reads zero in all of them, MADV_DONTNEED and a
 * munmap in one process keep the data for the others. The same image restores eagerly too.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ImageStore } from '../daemon/store/index.js';
import { readMaps } from '../daemon/proc/index.js';
import { LAZY_FEATURES, restoreImage } from '../daemon/restore/index.js';
import { loadImageOrThrow } from '../daemon/restore/image.js';
import { planLazyShmem } from '../daemon/restore/memory.js';
import { native, UFFD_FEATURES } from '../native/index.js';
import { isLazyRestoreError } from '../daemon/errors.js';
import {
  assertTreeVerified,
  dumpTree,
  keepAlive,
  killAll,
  leftOver,
  startTree,
  tempDir,
  type DumpedTree,
} from './support/restore.js';

const MIB = 64;
const tmp = tempDir('restore-shmem');
const hasShmem = (native.uffdProbe().features & UFFD_FEATURES.UFFD_FEATURE_MISSING_SHMEM) !== 0;
let store: ImageStore;
/** The tree of the first test, restored again by the eager test. */
let first: DumpedTree | null = null;

before(async () => {
  store = await ImageStore.open(join(tmp.path, 'store'));
});
after(async () => {
  await store?.close();
  tmp.remove();
});

async function dumpShmem(name: string, events: boolean, mode = 'events'): Promise<DumpedTree> {
  const args = (go: string) => [String(MIB), go, ...(events || mode !== 'events' ? [mode] : [])];
  return dumpTree(store, await startTree(tmp.path, name, 'restore_shmem', args), name);
}

/** The shared objects one process maps, by inode: the same inode in every process means one object. */
function sharedInodes(pid: number): string[] {
  return readMaps(pid)
    .filter((v) => v.kind === 'shmem' || v.kind === 'memfd')
    .map((v) => `${v.kind}:${v.path}:${v.inode}`)
    .sort();
}

test('a tree sharing 64 MiB of shared anonymous memory and a memfd is restored lazily and exchanges writes', async (t) => {
  if (!hasShmem) return t.skip('this kernel offers no UFFD_FEATURE_MISSING_SHMEM');
  first = await dumpShmem('shm', false);
  const { w, pids, go } = first;
  const img = await store.loadImage('shm');
  const objects = [...img.meta.keys()].filter((k) => k.startsWith('shmem/'));
  assert.equal(objects.length, 2, 'one record per shared object, not per process');
  assert.ok(
    objects.some((k) => (img.meta.get(k) as { kind?: string }).kind === 'memfd'),
    'the memfd is recorded as one',
  );
  try {
    const t0 = performance.now();
    const tree = await restoreImage(store, 'shm');
    const running = performance.now() - t0;
    assert.equal(tree.lazy, true);
    assert.ok(tree.eagerBytes < 1 << 20, `only a few pages written before running, got ${tree.eagerBytes}`);
    assert.deepEqual(
      tree.notes.filter((n) => /shared/.test(n)),
      [],
    );
    // One object each, mapped by all three: same inodes, and the memfd keeps its name.
    const inodes = sharedInodes(pids[0]!);
    assert.equal(inodes.length, 2);
    assert.ok(
      inodes.some((i) => i.startsWith('memfd:/memfd:lr-shmem:')),
      inodes.join(' '),
    );
    for (const p of pids.slice(1)) assert.deepEqual(sharedInodes(p), inodes);
    writeFileSync(go, '');
    const done = await keepAlive(tree.complete);
    const exit = await keepAlive(tree.exited);
    t.diagnostic(
      `64 MiB shared + 8 MiB memfd, 3 processes, lazy: running after ${running.toFixed(1)} ms, complete after ` +
        `${done.completeMs.toFixed(1)} ms; pages by fault ${done.faultPages}, in background ${done.backgroundPages}`,
    );
    assert.deepEqual(exit, { pid: pids[0], kind: 'exited', status: 0 }, w.output());
    assertTreeVerified(w.output());
    assert.deepEqual(done.errors, []);
    // Each page of the objects (18432) is placed once, through one of the three tasks, not once per task; the
    // rest is the processes' private memory.
    const placed = done.faultPages + done.backgroundPages;
    assert.ok(placed >= 18432 && placed < 18432 * 1.5, `${placed} pages placed`);
  } finally {
    w.kill();
    killAll(pids);
  }
});

test('MADV_REMOVE, MADV_DONTNEED and munmap on lazy shared memory keep every process exact', async (t) => {
  if (!hasShmem) return t.skip('this kernel offers no UFFD_FEATURE_MISSING_SHMEM');
  // An madvise(2) that lands between the service's scan of the threads and its read of the event cannot be told
  // apart: the tree is then killed with a named error (a correct outcome, never a wrong page), and the scenario
  // is tried again.
  for (let attempt = 1; ; attempt++) {
    const { w, pids, go } = await dumpShmem(`shm-events-${attempt}`, true);
    try {
      writeFileSync(go, '');
      // Without background copy the event ranges, which no process touches before the events, are still lazy
      // when they happen: the punched MiB must read zero (not its image data), the dropped one its image data.
      const tree = await restoreImage(store, `shm-events-${attempt}`, { background: false });
      const exit = await keepAlive(tree.exited);
      const done = await keepAlive(tree.complete).catch((e: unknown) => e as Error);
      if (done instanceof Error && /the call raced the scan/.test(done.message) && attempt < 3) {
        t.diagnostic(`attempt ${attempt}: ${done.message}`);
        continue;
      }
      if (done instanceof Error) throw done;
      assert.deepEqual(exit, { pid: pids[0], kind: 'exited', status: 0 }, w.output());
      assertTreeVerified(w.output());
      assert.deepEqual(done.errors, []);
      return;
    } finally {
      w.kill();
      killAll(pids);
      await leftOver(pids);
    }
  }
});

test('MADV_REMOVE over lazy shared pages in a process forked after the restore kills the tree, naming why', async (t) => {
  if (!hasShmem) return t.skip('this kernel offers no UFFD_FEATURE_MISSING_SHMEM');
  // The fork event names no pid, so the service cannot read that process's madvise(2) call: it cannot tell a
  // hole punch from MADV_DONTNEED, and must not guess.
  const { w, pids, go } = await dumpShmem('shm-forkremove', false, 'forkremove');
  try {
    writeFileSync(go, '');
    const tree = await restoreImage(store, 'shm-forkremove', { background: false });
    await assert.rejects(keepAlive(tree.complete), (e: unknown) => {
      assert.ok(isLazyRestoreError(e));
      assert.equal(e.code, 'RESTORE_FAILED');
      assert.match(
        e.message,
        /lazy memory is no longer certain: .*cannot tell MADV_DONTNEED from MADV_REMOVE in a process forked after the restore/,
      );
      return true;
    });
    const exit = await keepAlive(tree.exited);
    assert.deepEqual(exit, { pid: pids[0], kind: 'signaled', signal: 9, coreDumped: false });
    assert.doesNotMatch(w.output(), /VERIFY OK parent/);
    assert.deepEqual(await leftOver(pids), [], 'every process of the tree was killed');
  } finally {
    w.kill();
    killAll(pids);
  }
});

test('the same image restores eagerly: the objects are filled before the tree runs', async (t) => {
  if (!first) return t.skip('needs the image of the first test');
  const { w, pids, size } = first;
  truncateSync(w.out, size); // as at the dump (restore refuses a file whose size changed); the go file exists
  try {
    const t0 = performance.now();
    const tree = await restoreImage(store, 'shm', { eager: true });
    t.diagnostic(
      `64 MiB shared + 8 MiB memfd, 3 processes, eager: running after ${(performance.now() - t0).toFixed(1)} ms`,
    );
    assert.equal(tree.lazy, false);
    assert.ok(tree.eagerBytes >= (MIB - 1) << 20, `eager restore wrote ${tree.eagerBytes} bytes`);
    const exit = await keepAlive(tree.exited);
    assert.deepEqual(exit, { pid: pids[0], kind: 'exited', status: 0 }, w.output());
    assertTreeVerified(w.output());
  } finally {
    killAll(pids);
  }
});

test('without UFFD_FEATURE_MISSING_SHMEM, or mapped where it cannot be registered, an object is eager and noted', async (t) => {
  if (!first) return t.skip('needs the image of the first test');
  const img = await loadImageOrThrow(store, 'shm');
  const notes: string[] = [];
  assert.equal(planLazyShmem(img, false, LAZY_FEATURES, notes).size, 0);
  assert.equal(notes.length, 1);
  assert.match(
    notes[0]!,
    /^shared memory \(2 object\(s\), 72\.0 MiB\) restored eagerly: .*lacks UFFD_FEATURE_MISSING_SHMEM$/,
  );
  const all = LAZY_FEATURES | UFFD_FEATURES.UFFD_FEATURE_MISSING_SHMEM;
  assert.equal(planLazyShmem(img, false, all, []).size, 2);
  assert.equal(planLazyShmem(img, true, all, []).size, 0, '--eager leaves nothing lazy');
  // One process mapping an object PROT_NONE: that object cannot be left lazy (an unregistered mapping would put
  // zero pages into it); the other stays lazy.
  const [id] = [...img.shmem.keys()];
  const v = img.processes[1]!.record!.vmas.find((x) => x.shmem === id)!;
  v.prot = 0;
  const noted: string[] = [];
  const lazy = planLazyShmem(img, false, all, noted);
  assert.deepEqual(
    [...lazy],
    [...img.shmem.keys()].filter((k) => k !== id),
  );
  assert.match(
    noted[0]!,
    new RegExp(`^shared object ${id} restored eagerly: process ${img.processes[1]!.entry.pid} maps it`),
  );
});
