/**
 * ImageStore: checkpoint images in an embedded LevelDB (classic-level) under a data directory.
 * docs/image-store.md describes the key schema, the invariants and the garbage collection; keys.ts,
 * pagemap.ts and core.ts hold the details.
 */
import { ClassicLevel } from 'classic-level';
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { access, mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { checkStore } from './check.js';
import { jsonValue, parseJson, StoreCore, type Counters, type Db } from './core.js';
import { isStoreError, StoreError, type ErrnoCode } from './errors.js';
import {
  below,
  chunkKey,
  COUNTERS_KEY,
  FORMAT_KEY,
  FORMAT_VERSION,
  hexAddress,
  IMAGES,
  imageIdKey,
  imageKey,
  mapKey,
  mapMmPrefix,
  metaPrefix,
  PENDING,
  pendingKey,
  validateImageId,
  validateImageName,
  validateMmId,
} from './keys.js';
import { chunkMatches, decodeMapEntry, windowOf, type MapEntry, type PageWindow } from './pagemap.js';
import type { CheckReport, ImageSummary, LoadedImage, PageRange, RemoveResult, StoreStats } from './types.js';
import { ImageWriter, META_BYTES, META_JSON } from './writer.js';

export interface StoreOptions {
  /**
   * LevelDB write buffer (memtable) size. Bulk loads of 64 KiB values run ~3x faster with 64 MiB than with
   * LevelDB's 4 MiB default (fewer level-0 tables to compact); up to two buffers are in memory at once.
   */
  writeBufferSize?: number;
}

/** A writer or removal that had not finished when the store was last closed (or its process died). */
export interface RecoveredEntry {
  id: string;
  name: string;
  state: 'writing' | 'removing';
  startedAt: string;
  freedChunks: number;
}

interface PendingRecord {
  name: string;
  state: 'writing' | 'removing';
  startedAt: string;
  pid: number;
}

/** Windows per read batch in pages(): 128 x 64 KiB = 8 MiB per getMany. */
const READ_BATCH = 128;
const EMPTY = Buffer.alloc(0);

interface WindowRef {
  address: number;
  entry: MapEntry;
}

interface ReadBatch {
  windows: WindowRef[];
  /** Chunk values of the windows with data, in order. */
  chunks: Array<Buffer | undefined>;
}

interface ReadContext {
  imageId: string;
  name: string;
  mmId: string;
}

export class ImageStore {
  /** Writers and removals found unfinished at open and cleaned up. */
  readonly recovered: RecoveredEntry[] = [];

  private constructor(private readonly core: StoreCore) {}

  get dir(): string {
    return this.core.dir;
  }

  /** Opens (creating it, mode 0700, if needed) the store in `dir` and cleans up after writers that died. */
  static async open(dir: string, options: StoreOptions = {}): Promise<ImageStore> {
    const path = resolve(dir);
    await prepareDirectory(path);
    const db: Db = new ClassicLevel<string, Buffer>(path, {
      keyEncoding: 'utf8',
      valueEncoding: 'buffer',
      writeBufferSize: options.writeBufferSize ?? 64 << 20,
    });
    try {
      await db.open();
    } catch (e) {
      throw openError(path, e);
    }
    try {
      const store = new ImageStore(new StoreCore(db, path, await loadCounters(db, path)));
      await store.recover();
      return store;
    } catch (e) {
      await db.close();
      throw e;
    }
  }

  /**
   * Waits for operations in progress, then closes LevelDB. Writers still open are left as a crashed writer
   * would be: their pending marker stays and the next open() removes what they wrote.
   */
  async close(): Promise<void> {
    if (this.core.closed) return;
    this.core.closed = true;
    await this.core.drain();
    await this.core.db.close();
  }

  /** Reserves `name` and returns a writer for a new image; nothing is visible until the writer commits. */
  async beginImage(name: string, info: Record<string, unknown> = {}): Promise<ImageWriter> {
    validateImageName(name);
    const infoCopy = copyInfo(info);
    const { core } = this;
    return core.track(() =>
      core.catalogLock.run(async () => {
        if (core.activeNames.has(name) || (await core.db.has(imageKey(name)))) {
          throw new StoreError('IMAGE_EXISTS', `image ${name} already exists`, { image: name });
        }
        const id = await this.newId();
        const startedAt = new Date().toISOString();
        const marker: PendingRecord = { name, state: 'writing', startedAt, pid: process.pid };
        await core.db.put(pendingKey(id), jsonValue(marker));
        core.activeNames.add(name);
        return new ImageWriter(core, id, name, infoCopy, startedAt);
      }),
    );
  }

  /** Committed images, by name. */
  async list(): Promise<ImageSummary[]> {
    return this.core.track(async () => {
      const entries = await this.core.db.iterator({ ...IMAGES, highWaterMarkBytes: 1 << 20 }).all();
      return entries.map(([key, value]) => parseJson<ImageSummary>(value, key));
    });
  }

  async inspect(name: string): Promise<ImageSummary> {
    validateImageName(name);
    return this.core.track(async () => this.summaryOf(name));
  }

  /** Deletes the image and every chunk that only it referenced. */
  async remove(name: string): Promise<RemoveResult> {
    validateImageName(name);
    const { core } = this;
    return core.track(async () => {
      const summary = await core.catalogLock.run(async () => {
        const s = await this.summaryOf(name);
        const marker: PendingRecord = {
          name,
          state: 'removing',
          startedAt: new Date().toISOString(),
          pid: process.pid,
        };
        // Invisible first, under a pending marker, so a crash in the middle is finished by the next open().
        await core.db.batch([
          { type: 'del', key: imageKey(name) },
          { type: 'del', key: imageIdKey(s.id) },
          { type: 'put', key: pendingKey(s.id), value: jsonValue(marker) },
        ]);
        return s;
      });
      const result = await core.collect(summary.id);
      await core.deletePending(summary.id);
      return { id: summary.id, name, ...result };
    });
  }

  /** The image's summary and all its metadata (one range read, from one snapshot). */
  async loadImage(name: string): Promise<LoadedImage> {
    validateImageName(name);
    const { db } = this.core;
    return this.core.track(async () => {
      const snapshot = db.snapshot();
      try {
        const summary = await this.summaryOf(name, snapshot);
        const range = below(metaPrefix(summary.id));
        const entries = await db.iterator({ ...range, snapshot, highWaterMarkBytes: 4 << 20 }).all();
        const meta = new Map<string, unknown>();
        for (const [key, value] of entries) meta.set(key.slice(range.gte.length), decodeMeta(value, name, key));
        return { id: summary.id, name, summary, meta };
      } finally {
        await snapshot.close();
      }
    });
  }

  /**
   * The windows of one address space of an image, in address order, with their page data verified against
   * the content hash. Reads from a snapshot taken at the start, so removing the image meanwhile does not
   * disturb the reader; fetches the next batch of chunks while the caller consumes the current one.
   */
  async *pages(imageId: string, mmId: string, range: PageRange = {}): AsyncGenerator<PageWindow, void, undefined> {
    validateImageId(imageId);
    validateMmId(mmId);
    const { gte, lt } = windowKeyRange(imageId, mmId, range);
    if (this.core.closed) throw this.core.closedError();
    const { db } = this.core;
    const snapshot = db.snapshot();
    let it: ReturnType<Db['iterator']> | undefined;
    let next: Promise<ReadBatch | undefined> | undefined;
    try {
      const ctx: ReadContext = { imageId, mmId, name: await this.imageName(imageId, snapshot) };
      const iterator = db.iterator({ gte, lt, snapshot, highWaterMarkBytes: 1 << 16 });
      it = iterator;
      const fetch = (): Promise<ReadBatch | undefined> => {
        const p = iterator.nextv(READ_BATCH).then((entries) => {
          return entries.length === 0 ? undefined : this.readChunks(entries, snapshot, ctx);
        });
        // Marked handled: a caller that abandons the iteration must not turn a failed prefetch into an
        // unhandled rejection; a caller that goes on gets the error from its own await.
        void p.catch(() => undefined);
        return p;
      };
      next = fetch();
      for (;;) {
        const batch = await next;
        next = undefined;
        if (batch === undefined) return;
        next = fetch();
        let c = 0;
        for (const { address, entry } of batch.windows) {
          yield entry.bitmap === 0 ? emptyWindow(address, entry) : verified(ctx, address, entry, batch.chunks[c++]);
        }
      }
    } catch (e) {
      throw this.core.closed && !isStoreError(e) ? this.core.closedError() : e;
    } finally {
      // A prefetch still running when the caller stops must settle before its iterator closes.
      if (next !== undefined) await next.catch(() => undefined);
      await it?.close();
      await snapshot.close();
    }
  }

  /** The window containing `address` (demand path), or undefined when the image has no page there. */
  async pageWindow(imageId: string, mmId: string, address: number): Promise<PageWindow | undefined> {
    validateImageId(imageId);
    validateMmId(mmId);
    if (!Number.isSafeInteger(address) || address < 0) {
      throw new StoreError('INVALID_ARGUMENT', `address ${address} is not a non-negative integer`);
    }
    const { db } = this.core;
    const window = windowOf(address);
    return this.core.track(async () => {
      // getMany reads both keys from one implicit snapshot.
      const [name, value] = await db.getMany([imageIdKey(imageId), mapKey(imageId, mmId, window)]);
      if (name === undefined) throw notFoundById(imageId);
      if (value === undefined) return undefined;
      const ctx: ReadContext = { imageId, mmId, name: name.toString() };
      const entry = decodeEntry(ctx, window, value);
      if (entry.bitmap === 0) return emptyWindow(window, entry);
      const chunk = await db.get(chunkKey(entry.hash), { fillCache: false });
      // A chunk can only go missing legitimately if the image was removed after our first read.
      if (chunk === undefined && !(await db.has(imageIdKey(imageId)))) throw notFoundById(imageId);
      return verified(ctx, window, entry, chunk);
    });
  }

  async stats(): Promise<StoreStats> {
    const { core } = this;
    return core.track(async () => {
      const images = (await core.db.keys({ ...IMAGES }).all()).length;
      const diskBytes = await core.db.approximateSize('a', '{');
      return {
        dir: core.dir,
        images,
        writers: core.activeNames.size,
        chunks: core.counters.chunks,
        chunkBytes: core.counters.chunkBytes,
        diskBytes,
      };
    });
  }

  /** Reads the whole store and verifies every invariant of docs/image-store.md (slow: reads all page data). */
  async check(): Promise<CheckReport> {
    return this.core.track(() => checkStore(this.core.db));
  }

  private async recover(): Promise<void> {
    const pending = await this.core.db.iterator({ ...PENDING }).all();
    for (const [key, value] of pending) {
      const id = key.slice(PENDING.gte.length);
      const marker = parseJson<PendingRecord>(value, key);
      const result = await this.core.collect(id);
      await this.core.deletePending(id);
      this.recovered.push({
        id,
        name: marker.name,
        state: marker.state,
        startedAt: marker.startedAt,
        freedChunks: result.freedChunks,
      });
    }
  }

  private async newId(): Promise<string> {
    for (;;) {
      const id = randomBytes(8).toString('hex');
      const used = await this.core.db.hasMany([imageIdKey(id), pendingKey(id)]);
      if (!used.includes(true)) return id;
    }
  }

  private async summaryOf(name: string, snapshot?: ReturnType<Db['snapshot']>): Promise<ImageSummary> {
    const key = imageKey(name);
    const value = await this.core.db.get(key, snapshot === undefined ? {} : { snapshot });
    if (value === undefined) throw new StoreError('IMAGE_NOT_FOUND', `no image named ${name}`, { image: name });
    return parseJson<ImageSummary>(value, key);
  }

  private async imageName(imageId: string, snapshot: ReturnType<Db['snapshot']>): Promise<string> {
    const name = await this.core.db.get(imageIdKey(imageId), { snapshot });
    if (name === undefined) throw notFoundById(imageId);
    return name.toString();
  }

  private async readChunks(
    entries: Array<[string, Buffer]>,
    snapshot: ReturnType<Db['snapshot']>,
    ctx: ReadContext,
  ): Promise<ReadBatch> {
    const windows: WindowRef[] = [];
    const keys: string[] = [];
    const prefixLength = mapMmPrefix(ctx.imageId, ctx.mmId).length;
    for (const [key, value] of entries) {
      const address = parseInt(key.slice(prefixLength), 16);
      const entry = decodeEntry(ctx, address, value);
      windows.push({ address, entry });
      if (entry.bitmap !== 0) keys.push(chunkKey(entry.hash));
    }
    const chunks = keys.length === 0 ? [] : await this.core.db.getMany(keys, { snapshot, fillCache: false });
    return { windows, chunks };
  }
}

async function prepareDirectory(path: string): Promise<void> {
  try {
    await mkdir(path, { recursive: true, mode: 0o700 });
    // Root passes access(2) regardless of mode bits; for others this names the problem before LevelDB does.
    await access(path, constants.R_OK | constants.W_OK | constants.X_OK);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const code = err.code?.startsWith('E') ? (err.code as ErrnoCode) : 'STORE_OPEN_FAILED';
    throw new StoreError(code, `cannot use image store directory ${path}: ${err.message}`, {
      path,
      cause: e,
    });
  }
}

function openError(path: string, e: unknown): StoreError {
  const err = e as Error & { code?: string; cause?: { code?: string; message?: string } };
  if (err.code === 'LEVEL_LOCKED' || err.cause?.code === 'LEVEL_LOCKED') {
    return new StoreError(
      'STORE_LOCKED',
      `image store ${path} is in use by another process (probably a running lazyrestore daemon); ` +
        'stop it or go through its API',
      { path, cause: e },
    );
  }
  const detail = err.cause?.message ?? err.message;
  return new StoreError('STORE_OPEN_FAILED', `cannot open image store ${path}: ${detail}`, { path, cause: e });
}

/** Checks the format key (initialising an empty store) and returns the store-wide counters. */
async function loadCounters(db: Db, path: string): Promise<Counters> {
  const [format, counters] = await db.getMany([FORMAT_KEY, COUNTERS_KEY]);
  if (format === undefined) {
    const anyKey = await db.keys({ limit: 1 }).all();
    if (anyKey.length > 0) {
      throw new StoreError(
        'UNSUPPORTED_STORE_FORMAT',
        `${path} holds a LevelDB database that is not a lazyrestore image store`,
        { path },
      );
    }
    const fresh: Counters = { chunks: 0, chunkBytes: 0 };
    await db.batch([
      { type: 'put', key: FORMAT_KEY, value: jsonValue({ version: FORMAT_VERSION }) },
      { type: 'put', key: COUNTERS_KEY, value: jsonValue(fresh) },
    ]);
    return fresh;
  }
  const { version } = parseJson<{ version: number }>(format, FORMAT_KEY);
  if (version !== FORMAT_VERSION) {
    throw new StoreError(
      'UNSUPPORTED_STORE_FORMAT',
      `image store ${path} has format ${version}; this build reads ${FORMAT_VERSION}`,
      {
        path,
      },
    );
  }
  if (counters === undefined)
    throw new StoreError('CORRUPT_STORE', `image store ${path} lacks ${COUNTERS_KEY}`, { path });
  return parseJson<Counters>(counters, COUNTERS_KEY);
}

function copyInfo(info: Record<string, unknown>): Record<string, unknown> {
  if (typeof info !== 'object' || info === null || Array.isArray(info)) {
    throw new StoreError('INVALID_ARGUMENT', 'image info must be a JSON object');
  }
  try {
    return JSON.parse(JSON.stringify(info)) as Record<string, unknown>;
  } catch (cause) {
    throw new StoreError('INVALID_ARGUMENT', 'image info is not representable as JSON', { cause });
  }
}

function windowKeyRange(imageId: string, mmId: string, range: PageRange): { gte: string; lt: string } {
  const from = range.from ?? 0;
  const to = range.to ?? Number.MAX_SAFE_INTEGER;
  for (const [what, v] of [
    ['from', from],
    ['to', to],
  ] as const) {
    if (!Number.isSafeInteger(v) || v < 0)
      throw new StoreError('INVALID_ARGUMENT', `page range ${what}=${v} is not a non-negative integer`);
  }
  const prefix = mapMmPrefix(imageId, mmId);
  return { gte: prefix + hexAddress(windowOf(from)), lt: prefix + hexAddress(Math.max(to, windowOf(from))) };
}

function decodeMeta(value: Buffer, name: string, key: string): unknown {
  const body = value.subarray(1);
  if (value[0] === META_BYTES) return body;
  if (value[0] === META_JSON) {
    try {
      return JSON.parse(body.toString('utf8'));
    } catch {
      // fall through to the corruption error
    }
  }
  throw new StoreError('CORRUPT_IMAGE', `image ${name}: metadata entry ${key} is malformed`, { image: name });
}

function decodeEntry(ctx: ReadContext, address: number, value: Buffer): MapEntry {
  const entry = decodeMapEntry(value);
  if (entry === undefined) throw corrupt(ctx, address, 'its page map entry is malformed');
  return entry;
}

function emptyWindow(address: number, entry: MapEntry): PageWindow {
  return { address, present: entry.present, bitmap: 0, data: EMPTY };
}

function verified(ctx: ReadContext, address: number, entry: MapEntry, chunk: Buffer | undefined): PageWindow {
  if (chunk === undefined) throw corrupt(ctx, address, `chunk ${entry.hash} is missing`);
  if (!chunkMatches(entry, chunk)) throw corrupt(ctx, address, `chunk ${entry.hash} does not match its content hash`);
  return { address, present: entry.present, bitmap: entry.bitmap, data: chunk };
}

function corrupt(ctx: ReadContext, address: number, what: string): StoreError {
  return new StoreError(
    'CORRUPT_IMAGE',
    `image ${ctx.name} (id ${ctx.imageId}) is corrupt: address space ${ctx.mmId}, window 0x${address.toString(16)}: ${what}`,
    { image: ctx.name, imageId: ctx.imageId, mmId: ctx.mmId, address },
  );
}

function notFoundById(imageId: string): StoreError {
  return new StoreError('IMAGE_NOT_FOUND', `no committed image with id ${imageId}`, { imageId });
}
