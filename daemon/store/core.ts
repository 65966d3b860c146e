/**
 * The shared state behind an open store: the LevelDB handle, the locks that make concurrent writers and
 * removals safe, the store-wide counters, and the two operations that change chunks (storeWindows, collect).
 *
 * Concurrency model. LevelDB's lock gives one process the store; inside it, every change to chunk!,
 * chunk-ref! and store!counters runs under `chunkLock`, with its existence checks (hasMany, seeks) taken
 * inside the lock. So "is chunk X stored? then only add my ref" (writer) and "are there refs of X besides
 * mine? no, then delete X" (collector) never interleave: whichever runs second sees the other's batch.
 * `catalogLock` orders the name-level changes (reserve a name, commit, remove).
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
  pendingKey,
  REFS,
  refKey,
  refPrefix,
} from './keys.js';
import { Mutex } from './mutex.js';
import { decodeMapEntry, encodeMapEntry, PAGE_SIZE, popcount16, type SealedWindow } from './pagemap.js';

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

  constructor(
    readonly db: Db,
    readonly dir: string,
    public counters: Counters,
  ) {}

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
   * Writes sealed windows of image `id`: their page map entries, the chunks the store does not have yet, and
   * one chunk-ref per chunk the image had not referenced before (`seen`, updated on success), in one batch.
   */
  storeWindows(id: string, windows: SealedWindow[], seen: Set<string>): Promise<StoredResult> {
    return this.chunkLock.run(async () => {
      const fresh = new Map<string, SealedWindow>();
      for (const w of windows) if (w.hash !== '' && !seen.has(w.hash) && !fresh.has(w.hash)) fresh.set(w.hash, w);
      const candidates = [...fresh.values()];
      const stored = candidates.length === 0 ? [] : await this.db.hasMany(candidates.map((w) => chunkKey(w.hash)));
      const ops: Array<{ type: 'put'; key: string; value: Buffer }> = [];
      const result: StoredResult = { newChunks: 0, newBytes: 0 };
      candidates.forEach((w, i) => {
        if (!stored[i]) {
          ops.push({ type: 'put', key: chunkKey(w.hash), value: w.data });
          result.newChunks++;
          result.newBytes += w.data.length;
        }
        ops.push({ type: 'put', key: refKey(w.hash, id), value: EMPTY_VALUE });
      });
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
      if (result.newChunks > 0) ops.push({ type: 'put', key: COUNTERS_KEY, value: jsonValue(next) });
      await this.db.batch(ops);
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
    return result;
  }

  private collectSlice(id: string, entries: Array<[string, Buffer]>, result: CollectResult): Promise<void> {
    const sizes = new Map<string, number>();
    for (const [, value] of entries) {
      const entry = decodeMapEntry(value);
      // A malformed entry cannot name a chunk; deleting it is all that can be done for it.
      if (entry !== undefined && entry.bitmap !== 0) sizes.set(entry.hash, popcount16(entry.bitmap) * PAGE_SIZE);
    }
    const hashes = [...sizes.keys()].sort();
    return this.chunkLock.run(async () => {
      // A hash whose ref of ours is gone was handled by an earlier slice (or an earlier, interrupted run).
      const own = hashes.length === 0 ? [] : await this.db.hasMany(hashes.map((h) => refKey(h, id)));
      const mine = hashes.filter((_, i) => own[i]);
      const shared = await this.othersReference(mine, id);
      const ops: Array<{ type: 'del'; key: string } | { type: 'put'; key: string; value: Buffer }> = [];
      for (const [key] of entries) ops.push({ type: 'del', key });
      let { chunks, chunkBytes } = this.counters;
      mine.forEach((h, i) => {
        ops.push({ type: 'del', key: refKey(h, id) });
        if (shared[i]) {
          result.keptChunks++;
          return;
        }
        ops.push({ type: 'del', key: chunkKey(h) });
        chunks--;
        chunkBytes -= sizes.get(h)!;
        result.freedChunks++;
        result.freedBytes += sizes.get(h)!;
      });
      const next = { chunks, chunkBytes };
      if (chunks !== this.counters.chunks) ops.push({ type: 'put', key: COUNTERS_KEY, value: jsonValue(next) });
      await this.db.batch(ops);
      this.counters = next;
    });
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
