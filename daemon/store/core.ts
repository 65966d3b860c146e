/**
 * The shared state behind an open store: the LevelDB handle, the locks that make concurrent writers and
 * removals safe, the store-wide counters, and the two operations that change chunks (storeWindows, collect).
 *
 * Concurrency model. LevelDB's lock gives one process the store; inside it, every change to chunk!,
 * chunk-ref! and store!counters runs under `chunkLock`, with its existence checks (hasMany, seeks) taken
 * inside the lock. So "is chunk X stored? then only add my ref" (writer) and "are there refs of X besides
 * mine? no, then delete X" (collector) never interleave: whichever runs second sees the other's batch.
 * `catalogLock` orders the name-level changes (reserve a name, commit, remove).
 *
 * Page data lives in pack files (packs.ts); chunk! holds where. Space of chunks that lost their last
 * reference is given back by `reclaim`, once no reader that might still read it is active.
 */
import type { ClassicLevel } from 'classic-level';
import { StoreError } from './errors.js';
import {
  chunkKey,
  COUNTERS_KEY,
  mapImagePrefix,
  mapKey,
  metaPrefix,
  below,
  packKey,
  pendingKey,
  RECLAIMS,
  reclaimKey,
  REFS,
  refKey,
  refPrefix,
} from './keys.js';
import { Mutex } from './mutex.js';
import {
  decodeLocation,
  encodeLocation,
  type ChunkLocation,
  PackAppender,
  type PackFiles,
  type PackRecord,
} from './packs.js';
import { decodeMapEntry, encodeMapEntry, type SealedWindow } from './pagemap.js';
import { coalesce } from './slabs.js';

export type Db = ClassicLevel<string, Buffer>;

export interface Counters {
  chunks: number;
  chunkBytes: number;
}

export interface StoredResult {
  newChunks: number;
  newBytes: number;
}

export interface CollectResult {
  /** Chunks deleted because nothing else referenced them, and their bytes. */
  freedChunks: number;
  freedBytes: number;
  /** Chunks the image referenced that other images (or writers) still reference. */
  keptChunks: number;
}

/** Page map entries handled per chunkLock hold while collecting; bounds how long writers wait. */
const COLLECT_SLICE = 1024;
/** Concurrent iterators checking references; libuv runs 4 pool threads by default. */
const SEEK_LANES = 4;

export const EMPTY_VALUE = Buffer.alloc(0);

function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32LE(n, 0);
  return b;
}

export function jsonValue(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value));
}

export function parseJson<T>(value: Buffer, what: string): T {
  try {
    return JSON.parse(value.toString('utf8')) as T;
  } catch (cause) {
    throw new StoreError('CORRUPT_STORE', `${what} is not valid JSON`, { cause });
  }
}

export class StoreCore {
  readonly chunkLock = new Mutex();
  readonly catalogLock = new Mutex();
  /** Names reserved by writers of this process that have not committed or aborted yet. */
  readonly activeNames = new Set<string>();
  closed = false;
  private readonly busy = new Set<Promise<unknown>>();
  /** Readers of page data in progress (pages(), pageWindow(), check()). */
  private readers = 0;
  /** Space to give back once no reader is active: reclaim! entries exist, or packs lost their record. */
  private reclaimDue = false;
  private readonly unlinkDue = new Set<string>();
  /** Packs whose bytes someone uses beyond a read (mapped page sources): not punched or deleted meanwhile. */
  private readonly holds = new Map<string, number>();
  /** Pack files of writers still open, closed with the store. */
  readonly appenders = new Set<PackAppender>();

  constructor(
    readonly db: Db,
    readonly dir: string,
    public counters: Counters,
    readonly packs: PackFiles,
  ) {}

  /** The pack file of writer `id` (closed by the writer when it is done, or by close() of the store). */
  appender(id: string): PackAppender {
    const a = new PackAppender(this.packs, id, (x) => this.appenders.delete(x));
    this.appenders.add(a);
    return a;
  }

  /**
   * Keeps pack `pack` as it is (no hole punched, not deleted) until the returned function is called: for
   * memory that maps the pack and outlives the read that produced it. Take it while still reading.
   */
  holdPack(pack: string): () => void {
    this.holds.set(pack, (this.holds.get(pack) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = this.holds.get(pack)! - 1;
      if (n > 0) {
        this.holds.set(pack, n);
        return;
      }
      this.holds.delete(pack);
      if (this.readers === 0 && !this.closed) this.track(() => this.reclaim()).catch(() => undefined);
    };
  }

  /**
   * Runs a read of page data. Space freed meanwhile is not punched or deleted until every such read has
   * ended: a reader works from a LevelDB snapshot that may still name the chunks a removal just deleted.
   */
  async reading<T>(fn: () => Promise<T>): Promise<T> {
    this.readers++;
    try {
      return await fn();
    } finally {
      this.readers--;
      if (this.readers === 0 && (this.reclaimDue || this.unlinkDue.size > 0) && !this.closed) {
        this.track(() => this.reclaim()).catch(() => undefined);
      }
    }
  }

  /** The same for an async generator: counted as a reader from its first step to its end. */
  async *readingAll<T>(gen: AsyncGenerator<T, void, undefined>): AsyncGenerator<T, void, undefined> {
    let release: () => void = () => undefined;
    const held = this.reading(() => new Promise<void>((r) => (release = r)));
    try {
      yield* gen;
    } finally {
      release();
      await held;
    }
  }

  /** Runs an operation that close() must wait for; refuses new ones once the store is closing. */
  track<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(this.closedError());
    const p = fn();
    this.busy.add(p);
    const done = (): void => void this.busy.delete(p);
    p.then(done, done);
    return p;
  }

  async drain(): Promise<void> {
    while (this.busy.size > 0) await Promise.allSettled([...this.busy]);
  }

  closedError(): StoreError {
    return new StoreError('STORE_CLOSED', `image store ${this.dir} is closed`, { path: this.dir });
  }

  /**
   * Writes sealed windows of image `id`: the chunks the store does not have yet (appended to the writer's
   * pack, then located by chunk! keys), their page map entries, and one chunk-ref per chunk the image had
   * not referenced before (`seen`, updated on success), in one batch. The pack data is written first, so a
   * chunk! key never names bytes that are not there.
   */
  storeWindows(id: string, windows: SealedWindow[], seen: Set<string>, pack: PackAppender): Promise<StoredResult> {
    return this.chunkLock.run(async () => {
      const fresh = new Map<string, SealedWindow>();
      for (const w of windows) if (w.hash !== '' && !seen.has(w.hash) && !fresh.has(w.hash)) fresh.set(w.hash, w);
      const candidates = [...fresh.values()];
      const stored = candidates.length === 0 ? [] : await this.db.hasMany(candidates.map((w) => chunkKey(w.hash)));
      const added = candidates.filter((_, i) => !stored[i]);
      const ops: Array<{ type: 'put'; key: string; value: Buffer }> = [];
      const result: StoredResult = { newChunks: 0, newBytes: 0 };
      if (added.length > 0) {
        let offset = await pack.append(coalesce(added.map((w) => w.data)));
        for (const w of added) {
          const loc: ChunkLocation = { pack: pack.pack, offset, length: w.data.length };
          ops.push({ type: 'put', key: chunkKey(w.hash), value: encodeLocation(loc) });
          offset += w.data.length;
          result.newChunks++;
          result.newBytes += w.data.length;
        }
      }
      for (const w of candidates) ops.push({ type: 'put', key: refKey(w.hash, id), value: EMPTY_VALUE });
      for (const w of windows) {
        ops.push({
          type: 'put',
          key: mapKey(id, w.mmId, w.address),
          value: encodeMapEntry(w.present, w.bitmap, w.hash),
        });
      }
      const next = {
        chunks: this.counters.chunks + result.newChunks,
        chunkBytes: this.counters.chunkBytes + result.newBytes,
      };
      if (result.newChunks > 0) {
        ops.push({ type: 'put', key: COUNTERS_KEY, value: jsonValue(next) });
        // Only this writer adds to its pack, and nothing can delete a chunk of it while the writer runs (the
        // writer's own refs keep them), so the writer's running totals are the pack's record.
        const record: PackRecord = {
          chunks: (pack.record?.chunks ?? 0) + result.newChunks,
          bytes: (pack.record?.bytes ?? 0) + result.newBytes,
          end: pack.end,
        };
        ops.push({ type: 'put', key: packKey(pack.pack), value: jsonValue(record) });
        await this.db.batch(ops);
        pack.record = record;
      } else {
        await this.db.batch(ops);
      }
      this.counters = next;
      for (const h of fresh.keys()) seen.add(h);
      return result;
    });
  }

  /**
   * Deletes everything of image or writer `id` below meta! and map!, its chunk-refs, and each chunk whose
   * last reference that was. Idempotent and restartable: a page map entry is deleted in the same batch as
   * the ref it stands for, so after a crash the remaining entries name exactly the remaining refs. The
   * caller deletes the pending marker afterwards.
   */
  async collect(id: string): Promise<CollectResult> {
    const result: CollectResult = { freedChunks: 0, freedBytes: 0, keptChunks: 0 };
    await this.db.clear(below(metaPrefix(id)));
    const range = below(mapImagePrefix(id));
    for (;;) {
      const entries = await this.db.iterator({ ...range, limit: COLLECT_SLICE }).all();
      if (entries.length === 0) break;
      await this.collectSlice(id, entries, result);
    }
    await this.finishPack(id);
    await this.reclaim();
    return result;
  }

  private collectSlice(id: string, entries: Array<[string, Buffer]>, result: CollectResult): Promise<void> {
    const named = new Set<string>();
    for (const [, value] of entries) {
      const entry = decodeMapEntry(value);
      // A malformed entry cannot name a chunk; deleting it is all that can be done for it.
      if (entry !== undefined && entry.bitmap !== 0) named.add(entry.hash);
    }
    const hashes = [...named].sort();
    return this.chunkLock.run(async () => {
      // A hash whose ref of ours is gone was handled by an earlier slice (or an earlier, interrupted run).
      const own = hashes.length === 0 ? [] : await this.db.hasMany(hashes.map((h) => refKey(h, id)));
      const mine = hashes.filter((_, i) => own[i]);
      const shared = await this.othersReference(mine, id);
      const freed = mine.filter((_, i) => !shared[i]);
      const values = freed.length === 0 ? [] : await this.db.getMany(freed.map(chunkKey));
      const ops: Array<{ type: 'del'; key: string } | { type: 'put'; key: string; value: Buffer }> = [];
      for (const [key] of entries) ops.push({ type: 'del', key });
      for (const h of mine) ops.push({ type: 'del', key: refKey(h, id) });
      result.keptChunks += mine.length - freed.length;
      let { chunks, chunkBytes } = this.counters;
      const byPack = new Map<string, ChunkLocation[]>();
      freed.forEach((h, i) => {
        ops.push({ type: 'del', key: chunkKey(h) });
        const value = values[i];
        if (value === undefined) return; // already missing (a damaged store): nothing to count or free
        chunks--;
        result.freedChunks++;
        const loc = decodeLocation(value);
        if (loc === undefined) return;
        chunkBytes -= loc.length;
        result.freedBytes += loc.length;
        let list = byPack.get(loc.pack);
        if (list === undefined) byPack.set(loc.pack, (list = []));
        list.push(loc);
      });
      await this.releaseFromPacks(byPack, ops);
      const next = { chunks, chunkBytes };
      if (chunks !== this.counters.chunks) ops.push({ type: 'put', key: COUNTERS_KEY, value: jsonValue(next) });
      await this.db.batch(ops);
      this.counters = next;
      if (byPack.size > 0) this.reclaimDue = true;
    });
  }

  /** Ops that take freed chunks off their packs' records and record their ranges for reclaim. */
  private async releaseFromPacks(
    byPack: Map<string, ChunkLocation[]>,
    ops: Array<{ type: 'del'; key: string } | { type: 'put'; key: string; value: Buffer }>,
  ): Promise<void> {
    const packs = [...byPack.keys()];
    if (packs.length === 0) return;
    const records = await this.db.getMany(packs.map(packKey));
    packs.forEach((pack, i) => {
      const locs = byPack.get(pack)!;
      for (const loc of locs) ops.push({ type: 'put', key: reclaimKey(pack, loc.offset), value: u32(loc.length) });
      const value = records[i];
      if (value === undefined) return;
      const rec = parseJson<PackRecord>(value, packKey(pack));
      const left: PackRecord = {
        chunks: rec.chunks - locs.length,
        bytes: rec.bytes - locs.reduce((n, l) => n + l.length, 0),
        end: rec.end,
      };
      // The last chunk of a pack gone: its record goes, and reclaim deletes the file.
      ops.push(
        left.chunks > 0
          ? { type: 'put', key: packKey(pack), value: jsonValue(left) }
          : { type: 'del', key: packKey(pack) },
      );
    });
  }

  /**
   * After collecting writer or image `id`: its pack, if no chunk lives there any more, is deleted (by reclaim);
   * otherwise whatever a writer that died appended past its last batch is cut off.
   */
  private async finishPack(id: string): Promise<void> {
    await this.chunkLock.run(async () => {
      const value = await this.db.get(packKey(id));
      if (value === undefined) {
        this.unlinkDue.add(id);
        return;
      }
      await this.packs.truncateTo(id, parseJson<PackRecord>(value, packKey(id)).end);
    });
  }

  /**
   * Gives back the space of chunks that were deleted: punches their ranges out of packs that still hold
   * live chunks and deletes packs that hold none. Runs only while no reader is active (a reader started
   * before the deletion may still read those bytes); the last reader to finish runs it then. A held pack
   * (holdPack) is skipped and keeps its entries until the hold is released. The reclaim! entries make it
   * survive a crash: open() runs it before anything else.
   */
  async reclaim(): Promise<void> {
    if (this.readers > 0) return;
    await this.chunkLock.run(async () => {
      if (this.readers > 0) return;
      this.reclaimDue = false;
      const entries = await this.db.iterator({ ...RECLAIMS }).all();
      const byPack = new Map<string, Array<{ offset: number; length: number }>>();
      for (const [key, value] of entries) {
        const [, pack, offset] = key.split('!');
        let list = byPack.get(pack!);
        if (list === undefined) byPack.set(pack!, (list = []));
        if (value.length === 4) list.push({ offset: parseInt(offset!, 16), length: value.readUInt32LE(0) });
      }
      for (const pack of this.unlinkDue) if (!byPack.has(pack)) byPack.set(pack, []);
      this.unlinkDue.clear();
      // A held pack keeps its entries (and its file) for the reclaim that follows the release of its hold.
      for (const pack of this.holds.keys()) {
        if (byPack.delete(pack)) this.unlinkDue.add(pack);
      }
      const packs = [...byPack.keys()];
      const live = packs.length === 0 ? [] : await this.db.hasMany(packs.map(packKey));
      for (let i = 0; i < packs.length; i++) {
        const pack = packs[i]!;
        if (live[i]) await this.packs.punch(pack, byPack.get(pack)!);
        else if (![...this.appenders].some((a) => a.pack === pack)) await this.packs.remove(pack);
      }
      const done = entries.filter(([key]) => byPack.has(key.split('!')[1]!));
      if (done.length > 0) await this.db.batch(done.map(([key]) => ({ type: 'del' as const, key })));
    });
  }

  /**
   * At open, after recovery (no writer can be running: LevelDB's lock): deletes pack files that no record
   * names and cuts any tail past a record's end, so a crash at any point leaves no unreferenced page data.
   */
  async sweepPacks(): Promise<void> {
    await this.reclaim();
    for (const pack of await this.packs.list()) {
      const value = await this.db.get(packKey(pack));
      if (value === undefined) await this.packs.remove(pack);
      else await this.packs.truncateTo(pack, parseJson<PackRecord>(value, packKey(pack)).end);
    }
  }

  /**
   * For each hash: does a chunk-ref of an id other than `id` exist? Call under chunkLock. Each answer costs
   * one seek, an async round trip, so SEEK_LANES iterators work through interleaved shares of the list.
   */
  private async othersReference(hashes: string[], id: string): Promise<boolean[]> {
    const out = new Array<boolean>(hashes.length).fill(false);
    const lanes = Math.min(SEEK_LANES, hashes.length);
    const lane = async (first: number): Promise<void> => {
      const it = this.db.keys({ ...REFS });
      try {
        for (let i = first; i < hashes.length; i += lanes) {
          const prefix = refPrefix(hashes[i]!);
          const own = refKey(hashes[i]!, id);
          it.seek(prefix);
          // Our own ref sorts somewhere among the hash's refs; two keys include one that is not ours if any is.
          const keys = await it.nextv(2);
          out[i] = keys.some((k) => k.startsWith(prefix) && k !== own);
        }
      } finally {
        await it.close();
      }
    };
    await Promise.all(Array.from({ length: lanes }, (_, i) => lane(i)));
    return out;
  }

  async deletePending(id: string): Promise<void> {
    await this.db.del(pendingKey(id));
  }
}
