/**
 * Bad input for restore: an unknown image, a pid still in use (the original was left running), a file that
 * changed since the dump, corrupted page data (found before the tree runs with --eager, while it runs when lazy),
 * an image from another kernel, corrupted metadata. Each is a clear error with a stable code, and no process of
 * the image is left behind.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, readdirSync, readFileSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { ImageStore } from '../daemon/store/index.js';
import { dump } from '../daemon/dump/index.js';
import { restoreImage } from '../daemon/restore/index.js';
import { keepAlive, killAll, leftOver, tempDir, Workload } from './support/restore.js';

const tmp = tempDir('restore-errors');
const storeDir = join(tmp.path, 'store');
let store: ImageStore;
let w: Workload;
let pid = 0;
let dumpedSize = 0;

/** Our children that are restorer helpers (there must never be any after a failed restore). */
function strayHelpers(): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const status = readFileSync(`/proc/${name}/status`, 'utf8');
      const ppid = Number(/^PPid:\s*(\d+)/m.exec(status)?.[1]);
      if (ppid === process.pid && /^Name:\s*lazyrestore-res/m.test(status)) out.push(Number(name));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

async function expectFailure(code: string, options: { eager?: boolean } = {}): Promise<void> {
  await assert.rejects(restoreImage(store, 'mem', options), (e: Error & { code?: string }) => {
    assert.equal(e.code, code, e.message);
    return true;
  });
  assert.deepEqual(await leftOver([pid]), [], `pid ${pid} is left over`);
  assert.deepEqual(strayHelpers(), []);
}

/** Edits the store's LevelDB directly (the ImageStore is closed meanwhile). */
async function editDb(fn: (db: ClassicLevel<string, Buffer>, id: string) => Promise<void>): Promise<void> {
  const id = (await store.inspect('mem')).id;
  await store.close();
  const db = new ClassicLevel<string, Buffer>(storeDir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  try {
    await fn(db, id);
  } finally {
    await db.close();
    store = await ImageStore.open(storeDir);
  }
}

before(async () => {
  store = await ImageStore.open(storeDir);
  w = new Workload(join(tmp.path, 'out.txt'), 'restore_mem', ['8', join(tmp.path, 'go')]);
  pid = await w.started();
  await w.waitOutput(/^tick 2$/m);
  await dump(store, pid, { name: 'mem' });
  await w.reaped();
  dumpedSize = w.output().length;
});

after(async () => {
  w?.kill();
  killAll([pid]);
  await store?.close();
  tmp.remove();
});

test('an unknown image is IMAGE_NOT_FOUND', async () => {
  await assert.rejects(restoreImage(store, 'no-such-image'), { code: 'IMAGE_NOT_FOUND' });
  assert.deepEqual(strayHelpers(), []);
});

test('a pid still in use is PID_IN_USE, and the process using it is left alone', async () => {
  const other = new Workload(join(tmp.path, 'running.txt'), 'restore_mem', ['4', join(tmp.path, 'never')]);
  try {
    const running = await other.started();
    await other.waitOutput(/^tick 2$/m);
    await dump(store, running, { name: 'running', leaveRunning: true });
    const startTime = readFileSync(`/proc/${running}/stat`, 'utf8').split(') ')[1]!.split(' ')[19];
    await assert.rejects(restoreImage(store, 'running'), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'PID_IN_USE');
      assert.match(e.message, new RegExp(`pid ${running} is in use`));
      return true;
    });
    assert.equal(readFileSync(`/proc/${running}/stat`, 'utf8').split(') ')[1]!.split(' ')[19], startTime);
    const ticks = (other.output().match(/^tick/gm) ?? []).length;
    await other.waitOutput(new RegExp(`^tick ${ticks + 2}$`, 'm')); // still running, not stopped
    assert.deepEqual(strayHelpers(), []);
  } finally {
    other.kill();
  }
});

test('a file that changed since the dump is FILE_CHANGED', async () => {
  appendFileSync(w.out, 'later\n');
  try {
    await expectFailure('FILE_CHANGED');
  } finally {
    truncateSync(w.out, dumpedSize);
  }
});

test('corrupted page data fails an eager restore before the tree runs, and kills a lazy one', async () => {
  // Corrupt the chunk of a window in the middle of the 8 MiB region (lazy, streamed after the tree runs).
  let hash = '';
  await editDb(async (db, id) => {
    const prefix = `map!${id}!mm:${pid}!`;
    const entries = await db.iterator({ gte: prefix, lt: prefix + '~' }).all();
    const big = entries.filter(([, v]) => v.length === 36);
    const [, value] = big[Math.floor(big.length / 2)]!;
    hash = value.subarray(4, 36).toString('hex');
    const chunk = (await db.get(`chunk!${hash}`))!;
    chunk.writeUInt8(chunk.readUInt8(100) ^ 0xff, 100);
    await db.put(`chunk!${hash}`, chunk);
  });
  assert.notEqual(hash, '');
  await expectFailure('CORRUPT_IMAGE', { eager: true });

  const tree = await restoreImage(store, 'mem');
  await assert.rejects(keepAlive(tree.complete), { code: 'CORRUPT_IMAGE' });
  const exit = await keepAlive(tree.exited);
  assert.deepEqual(exit, { pid, kind: 'signaled', signal: 9, coreDumped: false });
  assert.deepEqual(await leftOver([pid]), []);
  assert.ok(!w.output().includes('CHECK'), 'the program never ran its check on missing memory');
  truncateSync(w.out, dumpedSize);
});

test('an image from another kernel is IMAGE_INCOMPATIBLE; corrupted metadata is CORRUPT_IMAGE', async () => {
  await editDb(async (db, id) => {
    const key = `meta!${id}!image`;
    const value = (await db.get(key))!;
    const image = JSON.parse(value.subarray(1).toString()) as { kernel: { release: string } };
    image.kernel.release = '2.6.32-ancient';
    await db.put(key, Buffer.concat([value.subarray(0, 1), Buffer.from(JSON.stringify(image))]));
  });
  await expectFailure('IMAGE_INCOMPATIBLE');
  await editDb(async (db, id) => {
    await db.put(`meta!${id}!process/${pid}`, Buffer.concat([Buffer.from([0]), Buffer.from('{"pid": ')]));
  });
  await expectFailure('CORRUPT_IMAGE');
});
