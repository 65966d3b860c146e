/**
 * System V shared memory: a parent and two children share a keyed segment (its attach cut in pieces, a second
 * read-only attach in one child) and a removed IPC_PRIVATE one. Restore recreates a segment that is gone with its
 * key, id, size, owner and permissions and fills it before the tree runs (userfaultfd cannot register shmat
 * attaches: the test checks that kernel fact too), attaches one that still exists as it is, and refuses, before
 * anything runs, a segment whose key another segment took meanwhile.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ImageStore } from '../daemon/store/index.js';
import { readSysvSegment, SHM_DEST, type SysvSegment } from '../daemon/proc/index.js';
import { restoreImage } from '../daemon/restore/index.js';
import { isLazyRestoreError } from '../daemon/errors.js';
import { native } from '../native/index.js';
import { programPath } from './support/programs.js';
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

const tmp = tempDir('restore-sysv');
let store: ImageStore;
/** Segments made by the tests, removed at the end whatever happens. */
const made = new Set<number>();

before(async () => {
  store = await ImageStore.open(join(tmp.path, 'store'));
});
after(async () => {
  for (const id of made) native.shmRemove(id);
  await store?.close();
  tmp.remove();
});

interface Dumped extends DumpedTree {
  key: number;
  ida: number;
  idb: number;
  /** The segments as the live tree had them. */
  before: { a: SysvSegment; b: SysvSegment };
}

async function dumpSysv(name: string): Promise<Dumped> {
  const key = 0x4c520000 + randomInt(0xffff);
  const t = await startTree(tmp.path, name, 'restore_sysv', (go) => [String(key), go]);
  const m = await t.w.waitOutput(/^SEGMENTS (\d+) (\d+)$/m);
  const [ida, idb] = [Number(m[1]), Number(m[2])];
  made.add(ida);
  const before = { a: readSysvSegment(ida)!, b: readSysvSegment(idb)! };
  const d = await dumpTree(store, t, name);
  assert.equal(readSysvSegment(idb), null, 'the removed segment went with the dumped tree');
  return { ...d, key, ida, idb, before };
}

/** Runs a restored tree through its exchange and checks what it verified and how it ended. */
async function runRestored(d: Dumped, tree: Awaited<ReturnType<typeof restoreImage>>): Promise<void> {
  writeFileSync(d.go, '');
  const exit = await keepAlive(tree.exited);
  assert.deepEqual(exit, { pid: d.pids[0], kind: 'exited', status: 0 }, d.w.output());
  assertTreeVerified(d.w.output());
  assert.match(d.w.output(), /^SHMDT OK$/m);
  const done = await keepAlive(tree.complete);
  assert.deepEqual(done.errors, []);
}

test('a kernel fact: userfaultfd cannot register a System V attach (so its pages are written eagerly)', () => {
  const out = execFileSync(programPath('restore_sysv'), ['probe'], { encoding: 'utf8' });
  assert.equal(out.trim(), 'REGISTER EINVAL');
});

let first: Dumped | null = null;

test('segments that are gone are recreated with their key, id, size, owner and mode, and shared again', async (t) => {
  first = await dumpSysv('sysv');
  const d = first;
  native.shmRemove(d.ida); // as on another host, or after ipcrm: nothing of the tree is left
  assert.equal(readSysvSegment(d.ida), null);
  const img = await store.loadImage('sysv');
  const records = [...img.meta.keys()].filter((k) => k.startsWith('shmem/sysv-'));
  assert.equal(records.length, 2, 'one record per segment, not per attach');
  try {
    const t0 = performance.now();
    const tree = await restoreImage(store, 'sysv');
    t.diagnostic(
      `16 MiB of System V segments (recreated, written first), 3 processes: running after ` +
        `${(performance.now() - t0).toFixed(1)} ms, ${tree.eagerBytes} bytes written before`,
    );
    assert.equal(tree.lazy, true);
    assert.ok(
      tree.notes.some((n) => /System V shared memory \(2 segment\(s\), 16\.0 MiB\) restored eagerly/.test(n)),
      tree.notes.join('\n'),
    );
    assert.ok(tree.eagerBytes >= 15 << 20, `the segments were written before the tree ran: ${tree.eagerBytes}`);
    const a = readSysvSegment(d.ida)!;
    const b = readSysvSegment(d.idb)!;
    // Same id, key, size, permissions and owner; each process attaches as before (shm_nattch counts attaches).
    for (const [now, then] of [
      [a, d.before.a],
      [b, d.before.b],
    ] as const) {
      assert.deepEqual(
        { key: now.key, size: now.size, mode: now.mode, uid: now.uid, gid: now.gid, nattch: now.nattch },
        { key: then.key, size: then.size, mode: then.mode, uid: then.uid, gid: then.gid, nattch: then.nattch },
      );
    }
    assert.equal(a.key, d.key);
    assert.ok((b.mode & SHM_DEST) !== 0, 'the removed segment is removed again once attached');
    await runRestored(d, tree);
    assert.equal(readSysvSegment(d.idb), null, 'the removed segment went with its last attach');
    assert.equal(readSysvSegment(d.ida)?.nattch, 0, 'the keyed segment outlives the tree, as it did');
  } finally {
    d.w.kill();
    killAll(d.pids);
  }
});

test('a segment that still exists is attached as it is; the removed one is recreated', async (t) => {
  if (!first) return t.skip('needs the image of the previous test');
  const d = first;
  truncateSync(d.w.out, d.size); // as at the dump (restore refuses a file whose size changed)
  try {
    const tree = await restoreImage(store, 'sysv', { eager: true });
    assert.ok(
      tree.notes.some((n) => new RegExp(`segment ${d.ida} .*still exists on this host: attached as it is`).test(n)),
      tree.notes.join('\n'),
    );
    assert.ok(!tree.notes.some((n) => /restored eagerly/.test(n)), 'an eager restore says nothing of laziness');
    await runRestored(d, tree);
  } finally {
    killAll(d.pids);
  }
});

test('a key taken by another segment refuses the restore before anything runs', async () => {
  const d = await dumpSysv('sysv-conflict');
  native.shmRemove(d.ida);
  const other = native.shmGet(d.key, 4096, 0o1000 | 0o600);
  made.add(other);
  try {
    await assert.rejects(restoreImage(store, 'sysv-conflict'), (e: unknown) => {
      assert.ok(isLazyRestoreError(e), String(e));
      assert.equal(e.code, 'IPC_ID_IN_USE');
      assert.match(e.message, new RegExp(`key 0x${d.key.toString(16)} belongs to segment ${other} here`));
      return true;
    });
    assert.deepEqual(await leftOver(d.pids, 1000), [], 'no process was created');
    assert.equal(readSysvSegment(d.idb), null, 'no segment was created');
    assert.equal(readSysvSegment(d.ida), null);
  } finally {
    d.w.kill();
    killAll(d.pids);
  }
});
