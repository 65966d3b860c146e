/**
 * The LevelDB image store (daemon/store) on a real LevelDB in a temporary directory: round trips, zero pages,
 * dedup, exact garbage collection, abort and crash recovery (including a writer process killed with SIGKILL),
 * corruption detection, name validation, open errors, locking, concurrent writers and removal, and a
 * throughput measurement that is printed, not asserted.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, chown, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { ClassicLevel } from 'classic-level';
import { ImageStore, isStoreError, type StoreError, type ImageWriter, type PageWindow } from '../daemon/store/index.js';

const PAGE = 4096;
const WINDOW = 16 * PAGE;
const here = dirname(fileURLToPath(import.meta.url));
const storeModule = join(here, '..', 'daemon', 'store', 'index.js');

const dirs: string[] = [];
const children = new Set<ChildProcess>();

after(async () => {
  for (const c of children) c.kill('SIGKILL');
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'lr-store-test-'));
  dirs.push(d);
  return d;
}

async function withStore<T>(fn: (store: ImageStore, dir: string) => Promise<T>): Promise<T> {
  const dir = join(await tempDir(), 'store');
  const store = await ImageStore.open(dir);
  try {
    return await fn(store, dir);
  } finally {
    await store.close();
  }
}

/** Random pages; page i is all zeros when zeroEvery > 0 and i % zeroEvery === 1. */
function pages(n: number, zeroEvery = 4): Buffer {
  const buf = randomBytes(n * PAGE);
  if (zeroEvery > 0) for (let i = 1; i < n; i += zeroEvery) buf.fill(0, i * PAGE, (i + 1) * PAGE);
  return buf;
}

/** What a reader must see: page address -> data, or null for a present zero page. Absent pages are missing. */
type Expected = Map<number, Buffer | null>;

function expect(into: Expected, address: number, data: Buffer, present?: Uint8Array): Expected {
  for (let i = 0; i < data.length / PAGE; i++) {
    if (present !== undefined && present[i] === 0) continue;
    const page = data.subarray(i * PAGE, (i + 1) * PAGE);
    into.set(address + i * PAGE, page.equals(Buffer.alloc(PAGE)) ? null : Buffer.from(page));
  }
  return into;
}

function windowPages(w: PageWindow, into: Expected): void {
  assert.equal(w.address % WINDOW, 0);
  assert.equal(w.bitmap & ~w.present, 0);
  let slot = 0;
  for (let i = 0; i < 16; i++) {
    const bit = 1 << i;
    if ((w.present & bit) === 0) continue;
    if ((w.bitmap & bit) === 0) {
      into.set(w.address + i * PAGE, null);
    } else {
      into.set(w.address + i * PAGE, w.data.subarray(slot * PAGE, (slot + 1) * PAGE));
      slot++;
    }
  }
  assert.equal(slot * PAGE, w.data.length);
}

async function readAll(
  store: ImageStore,
  id: string,
  mmId: string,
  range?: { from?: number; to?: number },
): Promise<Expected> {
  const got: Expected = new Map();
  let last = -1;
  for await (const w of store.pages(id, mmId, range)) {
    assert.ok(w.address > last, 'windows come in ascending address order');
    last = w.address;
    windowPages(w, got);
  }
  return got;
}

function assertSame(got: Expected, want: Expected, what: string): void {
  assert.equal(got.size, want.size, `${what}: number of present pages`);
  for (const [addr, data] of want) {
    assert.ok(got.has(addr), `${what}: page 0x${addr.toString(16)} missing`);
    const g = got.get(addr);
    if (data === null) assert.equal(g, null, `${what}: page 0x${addr.toString(16)} should be a zero page`);
    else assert.ok(g !== null && g !== undefined && g.equals(data), `${what}: page 0x${addr.toString(16)} differs`);
  }
}

function nonZero(want: Expected): number {
  let n = 0;
  for (const v of want.values()) if (v !== null) n++;
  return n;
}

async function assertClean(store: ImageStore): Promise<void> {
  const report = await store.check();
  assert.deepEqual(report.problems, [], 'store check finds no problem');
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<StoreError> {
  try {
    await p;
  } catch (e) {
    assert.ok(isStoreError(e), `expected a StoreError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return e;
  }
  assert.fail(`expected ${code}`);
}

/** Writes one image of the given address spaces (runs in order) and commits it. */
async function writeImage(
  store: ImageStore,
  name: string,
  spaces: Record<string, Array<[number, Buffer, Uint8Array?]>>,
): Promise<{ w: ImageWriter; expected: Map<string, Expected> }> {
  const w = await store.beginImage(name, { pid: 1234, purpose: 'test' });
  const expected = new Map<string, Expected>();
  for (const [mmId, runs] of Object.entries(spaces)) {
    const want: Expected = new Map();
    for (const [address, data, present] of runs) {
      await w.addPages(mmId, address, data, present);
      expect(want, address, data, present);
    }
    expected.set(mmId, want);
  }
  await w.commit();
  return { w, expected };
}

/** A node process running `code` (an ES module body) with the store module's path as argv[1]. */
function nodeChild(code: string, args: string[]): { child: ChildProcess; line: (prefix: string) => Promise<string> } {
  const child = spawn(process.execPath, ['--input-type=module', '-e', code, storeModule, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  child.on('exit', () => children.delete(child));
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const lines: string[] = [];
  const waiters: Array<() => void> = [];
  createInterface({ input: child.stdout }).on('line', (l) => {
    lines.push(l);
    for (const w of waiters.splice(0)) w();
  });
  const exited = once(child, 'exit');
  const line = async (prefix: string): Promise<string> => {
    for (;;) {
      const found = lines.find((l) => l.startsWith(prefix));
      if (found !== undefined) return found;
      const more = new Promise<void>((r) => waiters.push(r));
      const ended = await Promise.race([more.then(() => false), exited.then(() => true)]);
      if (ended && !lines.some((l) => l.startsWith(prefix)))
        throw new Error(`child exited before "${prefix}": ${stderr}`);
    }
  };
  return { child, line };
}

async function killChild(child: ChildProcess): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited;
  }
}

describe('image store', () => {
  test('round trip of metadata and pages across windows and address spaces', async () => {
    await withStore(async (store, dir) => {
      assert.equal((await stat(dir)).mode & 0o777, 0o700, 'the data directory is created private');
      const a1 = pages(40);
      const a2 = pages(7);
      const a3 = pages(20);
      const flags = new Uint8Array(20).map((_, i) => (i % 3 === 0 ? 0 : 1));
      const b1 = pages(33, 5);
      const spaces: Record<string, Array<[number, Buffer, Uint8Array?]>> = {
        // Starts mid-window, crosses several windows, and the next run continues the window it ended in.
        '1234': [
          [0x400000 + 3 * PAGE, a1],
          [0x400000 + 43 * PAGE, a2],
          [0x7f0000000000 + 9 * PAGE, a3, flags],
        ],
        '1240': [[0x10000, b1]],
        'shm:7': [[0x1000, pages(1, 0)]],
      };
      const { expected } = await writeImage(store, 'round-trip', spaces);
      const tree = { root: 1234, children: [{ pid: 1240 }] };
      // Metadata written after commit is impossible; write another image with metadata to check loadImage.
      const w = await store.beginImage('with-meta', { pid: 1234 });
      w.putMeta('tree', tree);
      w.putMeta('task/1234', { regs: [1, 2, 3], comm: 'prog' });
      w.putMeta('files/1234', Buffer.from([0, 1, 2, 255]));
      await w.addPages('1234', 0x400000 + 3 * PAGE, a1);
      const metaSummary = await w.commit();
      assert.equal(metaSummary.metaKeys, 3);

      const loaded = await store.loadImage('with-meta');
      assert.deepEqual(loaded.meta.get('tree'), tree);
      assert.deepEqual(loaded.meta.get('task/1234'), { regs: [1, 2, 3], comm: 'prog' });
      assert.deepEqual(loaded.meta.get('files/1234'), Buffer.from([0, 1, 2, 255]));
      assert.equal(loaded.meta.size, 3);
      assert.deepEqual(loaded.summary.info, { pid: 1234 });

      const image = await store.loadImage('round-trip');
      assert.equal(image.meta.size, 0);
      assert.deepEqual(
        image.summary.addressSpaces.map((s) => s.mmId),
        ['1234', '1240', 'shm:7'],
      );
      let stored = 0;
      let zero = 0;
      for (const [mmId, want] of expected) {
        assertSame(await readAll(store, image.id, mmId), want, `mm ${mmId}`);
        stored += nonZero(want);
        zero += want.size - nonZero(want);
      }
      assert.equal(image.summary.pages, stored);
      assert.equal(image.summary.zeroPages, zero);
      assert.equal(image.summary.bytes, stored * PAGE);
      assert.deepEqual(
        (await store.list()).map((s) => s.name),
        ['round-trip', 'with-meta'],
      );
      assert.equal((await store.inspect('round-trip')).id, image.id);

      // A range selects the windows overlapping [from, to).
      const want1234 = expected.get('1234')!;
      const from = 0x400000 + 20 * PAGE;
      const to = 0x400000 + 40 * PAGE;
      const part = await readAll(store, image.id, '1234', { from, to });
      const wantPart: Expected = new Map(
        [...want1234].filter(([a]) => a >= from - (from % WINDOW) && a < to - (to % WINDOW) + WINDOW),
      );
      assertSame(part, wantPart, 'range');

      // Demand path: the window containing an address, or undefined where nothing was dumped.
      const addr = 0x400000 + 17 * PAGE;
      const one = await store.pageWindow(image.id, '1234', addr + 123);
      assert.ok(one !== undefined);
      assert.equal(one.address, 0x410000);
      const got: Expected = new Map();
      windowPages(one, got);
      assert.ok(got.get(addr)!.equals(want1234.get(addr)!));
      assert.equal(await store.pageWindow(image.id, '1234', 0x500000), undefined);
      await rejectsWith(store.pageWindow('0123456789abcdef', '1234', addr), 'IMAGE_NOT_FOUND');
      await assertClean(store);

      // Persistence: the same data after a reopen.
      await store.close();
      const again = await ImageStore.open(dir);
      try {
        for (const [mmId, want] of expected) assertSame(await readAll(again, image.id, mmId), want, `reopened ${mmId}`);
      } finally {
        await again.close();
      }
    });
  });

  test('zero pages are not stored; present flags distinguish absent from zero pages', async () => {
    await withStore(async (store) => {
      const zeros = Buffer.alloc(64 * PAGE);
      const present = new Uint8Array(64).map((_, i) => (i < 32 ? 1 : 0));
      const { expected } = await writeImage(store, 'zeros', { '1': [[0x200000, zeros, present]] });
      let stats = await store.stats();
      assert.equal(stats.chunks, 0);
      assert.equal(stats.chunkBytes, 0);
      const image = await store.loadImage('zeros');
      assert.equal(image.summary.zeroPages, 32);
      assert.equal(image.summary.pages, 0);
      const got = await readAll(store, image.id, '1');
      assertSame(got, expected.get('1')!, 'zero image');
      assert.equal(got.size, 32, 'absent pages are not reported');

      // Unique random data with every 4th page zero: stored bytes are exactly the non-zero pages.
      const data = pages(64, 4);
      await writeImage(store, 'mixed', { '1': [[0, data]] });
      stats = await store.stats();
      const nonZeroPages = 64 - 16;
      assert.equal(stats.chunkBytes, nonZeroPages * PAGE);
      assert.equal(stats.chunks, 4);
      await assertClean(store);
    });
  });

  test('identical windows are stored once: across images and across address spaces of one image', async () => {
    await withStore(async (store) => {
      const data = pages(256);
      await writeImage(store, 'first', { '100': [[0x600000, data]] });
      const s1 = await store.stats();
      const second = await writeImage(store, 'second', { '200': [[0x600000, data]] });
      const s2 = await store.stats();
      assert.equal(s2.chunks, s1.chunks, 'no new chunk for the repeated dump');
      assert.equal(s2.chunkBytes, s1.chunkBytes);
      const sum2 = await store.inspect('second');
      assert.equal(sum2.newBytes, 0);
      assert.equal(sum2.sharedFraction, 1);
      assert.equal((await store.inspect('first')).newBytes, s1.chunkBytes);
      const img2 = await store.loadImage('second');
      assertSame(await readAll(store, img2.id, '200'), second.expected.get('200')!, 'second');

      // Parent and forked child in one image: the child's unchanged windows are shared, its written one is not.
      const child = Buffer.from(data);
      randomBytes(PAGE).copy(child, 5 * PAGE);
      await writeImage(store, 'forked', {
        '300': [[0x600000, data]],
        '301': [[0x600000, child]],
      });
      const forked = await store.inspect('forked');
      const s3 = await store.stats();
      // Only the child's modified window (page 5, a zero page in the parent) is new.
      assert.equal(s3.chunks, s2.chunks + 1);
      assert.equal(forked.newChunks, 1);
      assert.ok(forked.sharedFraction > 0.95, `shared fraction ${forked.sharedFraction}`);
      await assertClean(store);
    });
  });

  test('remove frees exactly the chunks nothing else references', async () => {
    await withStore(async (store) => {
      const shared = pages(128);
      const onlyA = pages(64);
      const onlyB = pages(48);
      await writeImage(store, 'a', {
        '1': [
          [0x100000, shared],
          [0x900000, onlyA],
        ],
      });
      const b = await writeImage(store, 'b', {
        '1': [
          [0x100000, shared],
          [0xa00000, onlyB],
        ],
      });
      const before = await store.stats();
      const sumA = await store.inspect('a');

      const removed = await store.remove('a');
      // onlyA: 4 windows of 16 pages, every 4th page zero; shared: 8 windows.
      assert.equal(removed.freedBytes, 48 * PAGE, 'freed what only a referenced');
      assert.equal(removed.freedChunks, 4);
      assert.equal(removed.keptChunks, 8);
      const after1 = await store.stats();
      assert.equal(after1.chunks, before.chunks - removed.freedChunks);
      assert.equal(after1.chunkBytes, before.chunkBytes - removed.freedBytes);
      await rejectsWith(store.inspect('a'), 'IMAGE_NOT_FOUND');
      await rejectsWith(store.remove('a'), 'IMAGE_NOT_FOUND');
      await rejectsWith(store.pageWindow(sumA.id, '1', 0x100000), 'IMAGE_NOT_FOUND');
      const imgB = await store.loadImage('b');
      assertSame(await readAll(store, imgB.id, '1'), b.expected.get('1')!, 'b after removing a');
      await assertClean(store);

      // A reader that started before a removal keeps reading the image it started on.
      const reader = store.pages(imgB.id, '1')[Symbol.asyncIterator]();
      const firstWindow = await reader.next();
      assert.equal(firstWindow.done, false);
      await store.remove('b');
      const seen: Expected = new Map();
      windowPages(firstWindow.value, seen);
      for (let r = await reader.next(); r.done !== true; r = await reader.next()) windowPages(r.value, seen);
      assertSame(seen, b.expected.get('1')!, 'b read across its removal');
      const empty = await store.stats();
      assert.equal(empty.images, 0);
      assert.equal(empty.chunks, 0);
      assert.equal(empty.chunkBytes, 0);
      const report = await store.check();
      assert.deepEqual(report.problems, []);
      assert.equal(report.refs, 0);
      assert.equal(report.mapEntries, 0);
    });
  });

  test('abort leaves nothing behind and keeps chunks others use', async () => {
    await withStore(async (store) => {
      const data = pages(64);
      const kept = await writeImage(store, 'kept', { '1': [[0, data]] });
      const before = await store.stats();
      const w = await store.beginImage('aborted');
      await w.addPages('1', 0, data);
      await w.addPages('1', 0x100000, pages(256));
      w.putMeta('tree', { pid: 1 });
      await w.flush();
      assert.ok((await store.stats()).chunks > before.chunks, 'the writer did store chunks before aborting');
      await w.abort();
      await rejectsWith(w.addPages('1', 0x200000, pages(1)), 'WRITER_CLOSED');
      const afterAbort = await store.stats();
      assert.equal(afterAbort.chunks, before.chunks);
      assert.equal(afterAbort.chunkBytes, before.chunkBytes);
      assert.equal(afterAbort.writers, 0);
      assert.deepEqual(
        (await store.list()).map((s) => s.name),
        ['kept'],
      );
      const img = await store.loadImage('kept');
      assertSame(await readAll(store, img.id, '1'), kept.expected.get('1')!, 'kept');
      await assertClean(store);
      // The name is free again; an abort while addPages calls are still in flight also leaves nothing.
      const again = await store.beginImage('aborted');
      const inFlight = [0, 1, 2, 3].map((i) => again.addPages('2', i * (4 << 20), pages(1024)));
      const settled = Promise.allSettled(inFlight);
      await again.abort();
      const outcomes = await settled;
      for (const o of outcomes) if (o.status === 'rejected') assert.ok(isStoreError(o.reason, 'WRITER_CLOSED'));
      assert.equal((await store.stats()).chunks, before.chunks);
      await assertClean(store);
    });
  });

  test('a writer that never committed is cleaned up when the store is reopened', async () => {
    const dir = join(await tempDir(), 'store');
    let store = await ImageStore.open(dir);
    const w = await store.beginImage('never-committed');
    await w.addPages('7', 0x400000, pages(300));
    await w.flush();
    assert.ok((await store.stats()).chunks > 0);
    await store.close();
    store = await ImageStore.open(dir);
    try {
      assert.equal(store.recovered.length, 1);
      assert.equal(store.recovered[0]!.name, 'never-committed');
      assert.equal(store.recovered[0]!.state, 'writing');
      assert.deepEqual(await store.list(), []);
      const stats = await store.stats();
      assert.equal(stats.chunks, 0);
      assert.equal(stats.chunkBytes, 0);
      const report = await store.check();
      assert.deepEqual(report.problems, []);
      assert.equal(report.chunks, 0);
      assert.equal(report.refs, 0);
      assert.equal(report.mapEntries, 0);
      assert.equal(report.pending, 0);
    } finally {
      await store.close();
    }
  });

  test('a writer process killed by SIGKILL mid-dump leaves no orphans; the store is locked while it lives', async () => {
    const dir = join(await tempDir(), 'store');
    const base = pages(128);
    let store = await ImageStore.open(dir);
    const kept = await writeImage(store, 'base', { '1': [[0, base]] });
    const baseStats = await store.stats();
    await store.close();
    const baseFile = join(dirname(dir), 'base.bin');
    await writeFile(baseFile, base);

    const code = `
      const { ImageStore } = await import(process.argv[1]);
      const { readFileSync } = await import('node:fs');
      const store = await ImageStore.open(process.argv[2]);
      const w = await store.beginImage('crashing');
      await w.addPages('1', 0, readFileSync(process.argv[3]));
      for (let i = 1; ; i++) {
        const run = Buffer.alloc(256 * 4096, i & 0xff);
        run.writeUInt32LE(i, 0);
        await w.addPages('1', i * run.length * 2, run);
        if (i === 8) { await w.flush(); console.log('FLUSHED'); }
      }`;
    const { child, line } = nodeChild(code, [dir, baseFile]);
    try {
      await line('FLUSHED');
      await rejectsWith(ImageStore.open(dir), 'STORE_LOCKED');
    } finally {
      await killChild(child);
    }
    assert.equal(child.signalCode, 'SIGKILL');

    store = await ImageStore.open(dir);
    try {
      assert.equal(store.recovered.length, 1);
      assert.equal(store.recovered[0]!.name, 'crashing');
      assert.ok(store.recovered[0]!.freedChunks > 0, 'the killed writer had stored chunks');
      assert.deepEqual(
        (await store.list()).map((s) => s.name),
        ['base'],
      );
      const stats = await store.stats();
      assert.equal(stats.chunks, baseStats.chunks);
      assert.equal(stats.chunkBytes, baseStats.chunkBytes);
      await assertClean(store);
      const img = await store.loadImage('base');
      assertSame(await readAll(store, img.id, '1'), kept.expected.get('1')!, 'base after the crash');
    } finally {
      await store.close();
    }
  });

  test('a removal interrupted after its first step is finished by the next open', async () => {
    const dir = join(await tempDir(), 'store');
    let store = await ImageStore.open(dir);
    const shared = pages(64);
    await writeImage(store, 'going', {
      '1': [
        [0, shared],
        [0x100000, pages(64)],
      ],
    });
    const staying = await writeImage(store, 'staying', { '1': [[0, shared]] });
    const going = await store.inspect('going');
    const stayingChunks = (await store.inspect('staying')).chunks;
    await store.close();

    // What remove() writes in its first batch (docs/image-store.md), then the process "dies".
    const db = new ClassicLevel<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
    await db.open();
    const marker = { name: 'going', state: 'removing', startedAt: new Date().toISOString(), pid: 1 };
    await db.batch([
      { type: 'del', key: 'image!going' },
      { type: 'del', key: `image-id!${going.id}` },
      { type: 'put', key: `pending!${going.id}`, value: Buffer.from(JSON.stringify(marker)) },
    ]);
    await db.close();

    store = await ImageStore.open(dir);
    try {
      assert.deepEqual(
        store.recovered.map((r) => [r.name, r.state]),
        [['going', 'removing']],
      );
      assert.equal(store.recovered[0]!.freedChunks, 4);
      const stats = await store.stats();
      assert.equal(stats.images, 1);
      assert.equal(stats.chunks, stayingChunks);
      await assertClean(store);
      const img = await store.loadImage('staying');
      assertSame(await readAll(store, img.id, '1'), staying.expected.get('1')!, 'staying');
    } finally {
      await store.close();
    }
  });

  test('a chunk altered or deleted by hand is reported as CORRUPT_IMAGE', async () => {
    const dir = join(await tempDir(), 'store');
    let store = await ImageStore.open(dir);
    await writeImage(store, 'victim', { '55': [[0x300000, pages(64, 0)]] });
    const { id } = await store.inspect('victim');
    await store.close();

    const db = new ClassicLevel<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
    await db.open();
    const chunkKeys = await db.keys({ gte: 'chunk!', lt: 'chunk"' }).all();
    assert.equal(chunkKeys.length, 4);
    // Which window does each chunk belong to? Read the page map (docs/image-store.md).
    const map = await db.iterator({ gte: `map!${id}!55!`, lt: `map!${id}!55"` }).all();
    const second = map[1]!;
    const secondHash = second[1].toString('hex', 4);
    const value = (await db.get(`chunk!${secondHash}`))!;
    value.writeUInt8(value.readUInt8(100) ^ 0xff, 100);
    await db.put(`chunk!${secondHash}`, value);
    const thirdHash = map[2]![1].toString('hex', 4);
    await db.del(`chunk!${thirdHash}`);
    await db.close();

    store = await ImageStore.open(dir);
    try {
      const err = await rejectsWith(
        (async () => {
          for await (const w of store.pages(id, '55')) void w;
        })(),
        'CORRUPT_IMAGE',
      );
      assert.equal(err.image, 'victim');
      assert.equal(err.mmId, '55');
      assert.equal(err.address, 0x310000);
      assert.match(err.message, /victim.*55.*0x310000.*does not match/);
      const missing = await rejectsWith(store.pageWindow(id, '55', 0x320000), 'CORRUPT_IMAGE');
      assert.equal(missing.address, 0x320000);
      assert.match(missing.message, /missing/);
      // The first window is still fine.
      const ok = await store.pageWindow(id, '55', 0x300000);
      assert.equal(ok?.bitmap, 0xffff);
      const report = await store.check();
      assert.ok(report.problems.some((p) => p.includes(secondHash) && p.includes('does not match')));
      assert.ok(report.problems.some((p) => p.includes(thirdHash) && p.includes('missing')));
    } finally {
      await store.close();
    }
  });

  test('invalid image names and arguments are rejected', async () => {
    await withStore(async (store) => {
      for (const name of ['../x', 'a!b', '', 'x'.repeat(200), '.hidden', 'a/b', 'sp ace']) {
        await rejectsWith(store.beginImage(name), 'INVALID_IMAGE_NAME');
        await rejectsWith(store.inspect(name), 'INVALID_IMAGE_NAME');
        await rejectsWith(store.remove(name), 'INVALID_IMAGE_NAME');
        await rejectsWith(store.loadImage(name), 'INVALID_IMAGE_NAME');
      }
      const w = await store.beginImage('x'.repeat(128));
      await rejectsWith(w.addPages('1', 100, pages(1)), 'INVALID_ARGUMENT');
      await rejectsWith(w.addPages('1', 0, Buffer.alloc(100)), 'INVALID_ARGUMENT');
      await rejectsWith(w.addPages('a!b', 0, pages(1)), 'INVALID_ARGUMENT');
      await rejectsWith(w.addPages('1', 0, pages(2), new Uint8Array(3)), 'INVALID_ARGUMENT');
      await w.addPages('1', 0x10000, pages(2));
      await rejectsWith(w.addPages('1', 0x10000, pages(1)), 'INVALID_ARGUMENT');
      assert.throws(
        () => w.putMeta('', 1),
        (e: unknown) => isStoreError(e, 'INVALID_ARGUMENT'),
      );
      assert.throws(
        () => w.putMeta('k', undefined),
        (e: unknown) => isStoreError(e, 'INVALID_ARGUMENT'),
      );
      await w.commit();
      await rejectsWith(store.beginImage('x'.repeat(128)), 'IMAGE_EXISTS');
      const [one, two] = await Promise.allSettled([store.beginImage('same'), store.beginImage('same')]);
      assert.equal(one.status, 'fulfilled');
      assert.equal(two.status, 'rejected');
      assert.ok(isStoreError(two.reason, 'IMAGE_EXISTS'));
      await one.value.abort();
    });
  });

  test('a directory that cannot be used gives an error with its code and path', async (t) => {
    const bad = '/etc/hostname/x';
    const err = await rejectsWith(ImageStore.open(bad), 'ENOTDIR');
    assert.equal(err.path, bad);
    assert.match(err.message, /\/etc\/hostname\/x/);

    // chmod 0500 stops everyone but root (CAP_DAC_OVERRIDE); as root, try it as the unprivileged user 'nobody'.
    const parent = await tempDir();
    await chmod(parent, 0o755);
    const readOnly = join(parent, 'ro');
    await mkdir(readOnly, { mode: 0o500 });
    const asRoot = process.getuid?.() === 0;
    if (!asRoot) {
      await rejectsWith(ImageStore.open(join(readOnly, 'store')), 'EACCES');
      return;
    }
    await chown(readOnly, 65534, 65534);
    const code = `
      const { ImageStore } = await import(process.argv[1]);
      for (const dir of [process.argv[2], process.argv[2] + '/store']) {
        try { await ImageStore.open(dir); console.log('OPENED ' + dir); }
        catch (e) { console.log('ERROR ' + JSON.stringify({ code: e.code, path: e.path, message: e.message })); }
      }
      console.log('DONE');`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', code, storeModule, readOnly], {
      uid: 65534,
      gid: 65534,
    });
    children.add(child);
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const [status] = (await once(child, 'exit')) as [number | null];
    if (status !== 0 && /EACCES.*import|Cannot find module|permission denied.*\.js/i.test(out)) {
      t.skip(`user nobody cannot load the store module here: ${out}`);
      return;
    }
    const errors = out
      .split('\n')
      .filter((l) => l.startsWith('ERROR '))
      .map((l) => JSON.parse(l.slice(6)) as { code: string; path: string; message: string });
    assert.equal(errors.length, 2, out);
    for (const e of errors) {
      assert.equal(e.code, 'EACCES');
      assert.ok(e.message.includes(e.path));
    }
    assert.equal(errors[1]!.path, join(readOnly, 'store'));
  });

  test('a second open of the same directory reports STORE_LOCKED', async () => {
    await withStore(async (_store, dir) => {
      const err = await rejectsWith(ImageStore.open(dir), 'STORE_LOCKED');
      assert.match(err.message, /daemon/);
      assert.equal(err.path, dir);
    });
  });

  test('a LevelDB database that is not an image store is refused, not modified', async () => {
    const dir = join(await tempDir(), 'other');
    const db = new ClassicLevel<string, string>(dir);
    await db.open();
    await db.put('someone', 'else');
    await db.close();
    await rejectsWith(ImageStore.open(dir), 'UNSUPPORTED_STORE_FORMAT');
    await db.open();
    assert.deepEqual(await db.keys().all(), ['someone']);
    await db.close();
  });

  test('two writers at once share chunks; removal during a sharing writer keeps its chunks', async () => {
    await withStore(async (store) => {
      const data = pages(200);
      const x = await store.beginImage('x');
      const y = await store.beginImage('y');
      // Interleave the two writers run by run, without awaiting in between.
      const runs: Array<Promise<void>> = [];
      for (let i = 0; i < 200; i += 25) {
        const run = data.subarray(i * PAGE, (i + 25) * PAGE);
        runs.push(x.addPages('1', i * PAGE, run), y.addPages('2', i * PAGE, run));
      }
      await Promise.all(runs);
      const [sx, sy] = await Promise.all([x.commit(), y.commit()]);
      assert.equal(sx.newBytes + sy.newBytes, sx.bytes, 'each window was written once between the two');
      const want = expect(new Map(), 0, data);
      assertSame(await readAll(store, sx.id, '1'), want, 'x');
      assertSame(await readAll(store, sy.id, '2'), want, 'y');
      await store.remove('x');
      await assertClean(store);

      // Remove an image while a writer that uses the same chunks is running, in several interleavings.
      for (let round = 0; round < 6; round++) {
        const base = pages(96);
        await writeImage(store, 'base', { '1': [[0, base]] });
        const w = await store.beginImage('sharer');
        const writing = (async () => {
          for (let i = 0; i < round; i++) await Promise.resolve();
          await w.addPages('9', 0, base);
          await w.flush();
        })();
        const removing = round % 2 === 0 ? store.remove('base') : (async () => (await writing, store.remove('base')))();
        await Promise.all([writing, removing]);
        const summary = await w.commit();
        assertSame(await readAll(store, summary.id, '9'), expect(new Map(), 0, base), `sharer, round ${round}`);
        await assertClean(store);
        await store.remove('sharer');
      }
      await rejectsWith(store.inspect('base'), 'IMAGE_NOT_FOUND');
      assert.equal((await store.stats()).chunks, (await store.check()).chunks);
      await store.remove('y');
      assert.equal((await store.stats()).chunks, 0);
    });
  });

  test('removal racing a writer that stores the same windows one flush at a time loses nothing', async () => {
    await withStore(async (store) => {
      // 1024 windows with one non-zero page each: the removal checks them one by one for other references
      // while the writer references them one by one, so their steps interleave throughout.
      const windows = 1024;
      const data = Buffer.alloc(windows * WINDOW);
      for (let i = 0; i < windows; i++) randomBytes(PAGE).copy(data, i * WINDOW);
      await writeImage(store, 'base', { '1': [[0, data]] });
      const w = await store.beginImage('sharer');
      const writing = (async () => {
        for (let i = 0; i < windows; i++) {
          await w.addPages('1', i * WINDOW, data.subarray(i * WINDOW, (i + 1) * WINDOW));
          await w.flush();
        }
      })();
      const removed = await store.remove('base');
      await writing;
      const summary = await w.commit();
      assert.ok(
        removed.keptChunks > 0 && removed.freedChunks > 0,
        `kept ${removed.keptChunks}, freed ${removed.freedChunks}`,
      );
      assertSame(await readAll(store, summary.id, '1'), expect(new Map(), 0, data), 'sharer');
      await assertClean(store);
      assert.equal((await store.stats()).chunks, windows);
    });
  });

  test('throughput of 256 MiB of random pages (printed, not asserted)', async (t) => {
    await withStore(async (store) => {
      const totalPages = (256 << 20) / PAGE;
      const runPages = 256;
      // Unique, incompressible pages: a random 1 MiB block with the run number stamped into every page.
      const block = randomBytes(runPages * PAGE);
      const digestIn = createHash('sha256');
      const w = await store.beginImage('big');
      let t0 = performance.now();
      for (let r = 0; r < totalPages / runPages; r++) {
        const run = Buffer.from(block);
        for (let p = 0; p < runPages; p++) run.writeUInt32LE(r, p * PAGE);
        digestIn.update(run);
        await w.addPages('1', r * run.length, run);
      }
      const summary = await w.commit();
      const writeS = (performance.now() - t0) / 1000;
      assert.equal(summary.pages, totalPages);

      t0 = performance.now();
      const digestOut = createHash('sha256');
      let bytes = 0;
      for await (const win of store.pages(summary.id, '1')) {
        digestOut.update(win.data);
        bytes += win.data.length;
      }
      const readS = (performance.now() - t0) / 1000;
      assert.equal(bytes, 256 << 20);
      assert.equal(digestOut.digest('hex'), digestIn.digest('hex'));

      t0 = performance.now();
      const removed = await store.remove('big');
      const removeS = (performance.now() - t0) / 1000;
      assert.equal(removed.freedBytes, 256 << 20);
      const gb = (256 << 20) / 1e9;
      t.diagnostic(`write 256 MiB (addPages + commit): ${writeS.toFixed(2)} s, ${(gb / writeS).toFixed(3)} GB/s`);
      t.diagnostic(`read 256 MiB (pages(), hash-verified): ${readS.toFixed(2)} s, ${(gb / readS).toFixed(3)} GB/s`);
      t.diagnostic(`remove 4096 chunks: ${removeS.toFixed(2)} s`);
    });
  });
});
