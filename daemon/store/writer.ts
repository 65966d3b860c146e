/**
 * ImageWriter: one image being written. Pages are cut into windows as they arrive, sealed windows are queued
 * and written in batches of ~FLUSH_BYTES while the caller goes on producing (one batch in flight at a time,
 * which is also the backpressure). Nothing is visible until commit() writes the catalogue entry, the id index
 * and the metadata in one batch and clears the pending marker.
 */
import type { StoreCore } from './core.js';
import { jsonValue } from './core.js';
import { StoreError } from './errors.js';
import { imageIdKey, imageKey, metaKey, pendingKey, validateMetaKey, validateMmId } from './keys.js';
import { PAGE_SIZE, WindowAssembler, type SealedWindow } from './pagemap.js';
import type { AddressSpaceSummary, ImageSummary } from './types.js';

/** Page data queued before a batch is written. Larger batches amortise LevelDB's per-write cost. */
const FLUSH_BYTES = 8 << 20;
/** Page map entries of windows without data are tiny; bound their number per batch too. */
const FLUSH_WINDOWS = 4096;
const MAX_ADDRESS = Number.MAX_SAFE_INTEGER;

export const META_JSON = 0;
export const META_BYTES = 1;

export interface WriterProgress {
  /** Present pages seen so far (zero and non-zero), and those that were zero. */
  pagesSeen: number;
  zeroPages: number;
  /** Non-zero pages and windows handed to the store so far (written or queued). */
  pages: number;
  windows: number;
  /** Page data written as new chunks so far (the rest was already stored). */
  newBytes: number;
}

type WriterState = 'open' | 'committing' | 'committed' | 'aborted' | 'failed';

export class ImageWriter {
  private state: WriterState = 'open';
  private readonly assemblers = new Map<string, WindowAssembler>();
  private readonly spaces = new Map<string, AddressSpaceSummary>();
  private readonly meta = new Map<string, Buffer>();
  private readonly seen = new Set<string>();
  private queue: SealedWindow[] = [];
  private queuedBytes = 0;
  private inflight: Promise<void> | undefined;
  private failure: unknown;
  private newChunks = 0;
  private newBytes = 0;
  private readonly emit = (w: SealedWindow): void => this.enqueue(w);

  constructor(
    private readonly core: StoreCore,
    readonly id: string,
    readonly name: string,
    private readonly info: Record<string, unknown>,
    readonly createdAt: string,
  ) {}

  get progress(): WriterProgress {
    let pages = 0;
    let zeroPages = 0;
    let windows = 0;
    for (const s of this.spaces.values()) {
      pages += s.pages;
      zeroPages += s.zeroPages;
      windows += s.windows;
    }
    return { pagesSeen: pages + zeroPages, zeroPages, pages, windows, newBytes: this.newBytes };
  }

  /** Records one metadata entry (replacing an earlier one of the same key): a Buffer as is, anything else as JSON. */
  putMeta(key: string, value: unknown): void {
    this.assertOpen();
    validateMetaKey(key);
    if (Buffer.isBuffer(value) || value instanceof Uint8Array) {
      this.meta.set(key, Buffer.concat([Buffer.from([META_BYTES]), value]));
      return;
    }
    let json: string | undefined;
    try {
      json = JSON.stringify(value);
    } catch (cause) {
      throw new StoreError('INVALID_ARGUMENT', `metadata ${key} is not representable as JSON`, { cause });
    }
    if (json === undefined) throw new StoreError('INVALID_ARGUMENT', `metadata ${key} is not representable as JSON`);
    this.meta.set(key, Buffer.concat([Buffer.from([META_JSON]), Buffer.from(json)]));
  }

  /**
   * Adds a run of pages of address space `mmId` starting at `address`: `data` holds whole pages, `present`
   * (optional, one byte per page, 0 = absent) marks the pages the dump found present; absent pages are not
   * recorded at all. Runs of one address space come in ascending address order. The caller may reuse `data`
   * once the returned promise resolves.
   */
  async addPages(mmId: string, address: number, data: Buffer | Uint8Array, present?: Uint8Array): Promise<void> {
    this.assertOpen();
    validateMmId(mmId);
    const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    this.validateRun(address, buf, present);
    let asm = this.assemblers.get(mmId);
    if (asm === undefined) {
      asm = new WindowAssembler(mmId);
      this.assemblers.set(mmId, asm);
      this.spaces.set(mmId, { mmId, windows: 0, pages: 0, zeroPages: 0, bytes: 0 });
    }
    // Everything up to here is synchronous, so calls that are not awaited one by one still apply in call order.
    asm.add(address, buf, present, this.emit);
    if (this.queuedBytes >= FLUSH_BYTES || this.queue.length >= FLUSH_WINDOWS) await this.startFlush();
  }

  /** Writes every sealed window queued so far (windows still open at the end of a run stay in memory). */
  async flush(): Promise<void> {
    this.assertOpen();
    await this.startFlush();
    await this.settle();
    this.throwIfFailed();
  }

  /** Makes the image visible under its name, atomically, and returns its summary. */
  async commit(): Promise<ImageSummary> {
    this.assertOpen();
    this.state = 'committing';
    try {
      for (const asm of this.assemblers.values()) asm.finish(this.emit);
      await this.startFlush();
      await this.settle();
      this.throwIfFailed();
      const summary = this.summary();
      await this.core.track(() => this.writeCommit(summary));
      this.state = 'committed';
      this.core.activeNames.delete(this.name);
      return summary;
    } catch (e) {
      this.state = 'failed';
      throw e;
    }
  }

  /** Removes everything this writer stored that nothing else references. Safe after a failed commit. */
  async abort(): Promise<void> {
    if (this.state === 'committed' || this.state === 'aborted') return;
    if (this.state === 'committing') {
      throw new StoreError('WRITER_CLOSED', `image ${this.name} is being committed and cannot be aborted`, {
        image: this.name,
      });
    }
    this.state = 'aborted';
    await this.settle();
    await this.core.track(async () => {
      await this.core.collect(this.id);
      await this.core.deletePending(this.id);
    });
    this.core.activeNames.delete(this.name);
  }

  /** Waits for the batch in flight, if any, whatever its outcome. */
  async settle(): Promise<void> {
    while (this.inflight !== undefined) await this.inflight;
  }

  private validateRun(address: number, data: Buffer, present: Uint8Array | undefined): void {
    if (!Number.isSafeInteger(address) || address < 0 || address % PAGE_SIZE !== 0) {
      throw new StoreError('INVALID_ARGUMENT', `page address ${address} is not a page-aligned non-negative integer`);
    }
    if (data.length === 0 || data.length % PAGE_SIZE !== 0) {
      throw new StoreError(
        'INVALID_ARGUMENT',
        `page data of ${data.length} bytes is not a positive multiple of ${PAGE_SIZE}`,
      );
    }
    if (address + data.length > MAX_ADDRESS) {
      throw new StoreError('INVALID_ARGUMENT', `page run at 0x${address.toString(16)} ends beyond 2^53`);
    }
    if (present !== undefined && present.length !== data.length / PAGE_SIZE) {
      throw new StoreError('INVALID_ARGUMENT', `present flags: ${present.length} for ${data.length / PAGE_SIZE} pages`);
    }
  }

  private enqueue(w: SealedWindow): void {
    const space = this.spaces.get(w.mmId)!;
    const pages = w.data.length / PAGE_SIZE;
    space.windows++;
    space.pages += pages;
    space.bytes += w.data.length;
    let bits = w.present & ~w.bitmap;
    for (; bits !== 0; bits &= bits - 1) space.zeroPages++;
    this.queue.push(w);
    this.queuedBytes += w.data.length;
  }

  /** Hands the queue to a new batch once the previous one has settled; does not wait for the new one. */
  private async startFlush(): Promise<void> {
    await this.settle();
    this.throwIfFailed();
    // An abort that ran while we waited owns the writer's data now; a batch started here would outlive it.
    if (this.state !== 'open' && this.state !== 'committing') {
      throw new StoreError('WRITER_CLOSED', `writer of image ${this.name} is ${this.state}`, { image: this.name });
    }
    if (this.queue.length === 0) return;
    const windows = this.queue;
    this.queue = [];
    this.queuedBytes = 0;
    // The rejection is kept in `failure` (reported by the next call), so a caller that stops calling leaves
    // no unhandled rejection behind.
    this.inflight = this.core
      .track(() => this.core.storeWindows(this.id, windows, this.seen))
      .then(
        (r) => {
          this.newChunks += r.newChunks;
          this.newBytes += r.newBytes;
        },
        (e: unknown) => {
          this.failure ??= e;
        },
      )
      .finally(() => {
        this.inflight = undefined;
      });
  }

  private async writeCommit(summary: ImageSummary): Promise<void> {
    await this.core.catalogLock.run(async () => {
      if (await this.core.db.has(imageKey(this.name))) {
        throw new StoreError('IMAGE_EXISTS', `image ${this.name} already exists`, { image: this.name });
      }
      const ops: Array<{ type: 'put'; key: string; value: Buffer } | { type: 'del'; key: string }> = [
        { type: 'put', key: imageKey(this.name), value: jsonValue(summary) },
        { type: 'put', key: imageIdKey(this.id), value: Buffer.from(this.name) },
        { type: 'del', key: pendingKey(this.id) },
      ];
      for (const [key, value] of this.meta) ops.push({ type: 'put', key: metaKey(this.id, key), value });
      await this.core.db.batch(ops);
    });
  }

  private summary(): ImageSummary {
    const spaces = [...this.spaces.values()].sort((a, b) => (a.mmId < b.mmId ? -1 : a.mmId > b.mmId ? 1 : 0));
    let windows = 0;
    let pages = 0;
    let zeroPages = 0;
    for (const s of spaces) {
      windows += s.windows;
      pages += s.pages;
      zeroPages += s.zeroPages;
    }
    const bytes = pages * PAGE_SIZE;
    return {
      id: this.id,
      name: this.name,
      createdAt: this.createdAt,
      committedAt: new Date().toISOString(),
      info: this.info,
      addressSpaces: spaces,
      windows,
      pages,
      zeroPages,
      bytes,
      chunks: this.seen.size,
      newChunks: this.newChunks,
      newBytes: this.newBytes,
      sharedBytes: bytes - this.newBytes,
      sharedFraction: bytes === 0 ? 0 : (bytes - this.newBytes) / bytes,
      metaKeys: this.meta.size,
    };
  }

  private assertOpen(): void {
    if (this.core.closed) throw this.core.closedError();
    if (this.state !== 'open') {
      throw new StoreError('WRITER_CLOSED', `writer of image ${this.name} is ${this.state}`, { image: this.name });
    }
    this.throwIfFailed();
  }

  private throwIfFailed(): void {
    if (this.failure === undefined) return;
    throw new StoreError('WRITER_FAILED', `writing image ${this.name} failed; abort() it: ${describe(this.failure)}`, {
      image: this.name,
      cause: this.failure,
    });
  }
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : JSON.stringify(e);
}
