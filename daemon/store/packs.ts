/**
 * Pack files: where the store keeps page data (docs/image-store.md, "Pack files").
 *
 * LevelDB is a poor home for a gigabyte of 64 KiB values whose keys are content hashes: every value is
 * written to its log, then to a level-0 table, then rewritten by each compaction it goes through (random
 * keys overlap every table), and reading an image back in address order is a random read per window. So
 * chunk bytes go to append-only files instead, one per writer (`<store>/packs/<writer id>`), in the order
 * the writer produced them, and LevelDB keeps only small records: `chunk!<hash>` holds the chunk's
 * location. A dump then writes its data once, sequentially, and a restore of a fresh image reads it back
 * sequentially, in large coalesced reads.
 *
 * Space is given back exactly: the range of a chunk nothing references any more is punched out of its
 * pack (fallocate(2) FALLOC_FL_PUNCH_HOLE), and a pack without live chunks is deleted. Both are deferred
 * while a reader that may still read the old data is active (see StoreCore.reclaim).
 */
import { constants } from 'node:fs';
import { mkdir, open, readdir, stat, truncate, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { native } from '../../native/index.js';

export const PACK_DIR = 'packs';
const PACK_ID_RE = /^[0-9a-f]{16}$/;
const LOCATION_BYTES = 28;

/** Where a chunk's bytes are: `length` bytes at `offset` of pack `pack`. */
export interface ChunkLocation {
  pack: string;
  offset: number;
  length: number;
}

/**
 * `pack!<id>`: the chunks located in pack `id` (number and bytes) and the end of the data that committed
 * batches wrote; a writer that died may have appended past `end`, and recovery truncates that tail.
 */
export interface PackRecord {
  chunks: number;
  bytes: number;
  end: number;
}

/** chunk! value: 16 ASCII hex pack id, u64 LE offset (< 2^48 used), u32 LE length. */
export function encodeLocation(loc: ChunkLocation): Buffer {
  const out = Buffer.alloc(LOCATION_BYTES);
  out.write(loc.pack, 0, 16, 'latin1');
  out.writeUIntLE(loc.offset, 16, 6);
  out.writeUInt32LE(loc.length, 24);
  return out;
}

/** Undefined when the value is not a well-formed location. */
export function decodeLocation(value: Buffer): ChunkLocation | undefined {
  if (value.length !== LOCATION_BYTES || value.readUInt16LE(22) !== 0) return undefined;
  const pack = value.toString('latin1', 0, 16);
  if (!PACK_ID_RE.test(pack)) return undefined;
  return { pack, offset: value.readUIntLE(16, 6), length: value.readUInt32LE(24) };
}

/**
 * Gives a reader the bytes of `length` at `offset` of pack `pack` (file `path`) its own way, e.g. as a file
 * mapping (daemon/restore/lazy.ts). Shorter when the file is: reported as a chunk that does not match.
 */
export type PackMapper = (pack: string, path: string, offset: number, length: number) => Buffer;

/** The pack file one writer appends its new chunks to. Created on the first append. */
export class PackAppender {
  /** Bytes appended so far: the offset of the next chunk. */
  end = 0;
  /** The pack's record as last written (undefined before the first batch with new chunks). */
  record: PackRecord | undefined;
  private handle: FileHandle | undefined;

  constructor(
    private readonly files: PackFiles,
    readonly pack: string,
    private readonly onClose: (a: PackAppender) => void = () => undefined,
  ) {}

  /** Appends `buffers` back to back; returns the offset of the first. */
  async append(buffers: Buffer[]): Promise<number> {
    this.handle ??= await this.files.create(this.pack);
    const at = this.end;
    let length = 0;
    for (const b of buffers) length += b.length;
    // The offset advances even if the write fails half-way: whatever was written past the recorded end is
    // truncated when the writer's id is collected.
    this.end += length;
    let done = 0;
    while (done < length) {
      // writev may write less than asked (large totals); go on from where it stopped.
      const rest = done === 0 ? buffers : remainder(buffers, done);
      const { bytesWritten } = await this.handle.writev(rest, at + done);
      if (bytesWritten <= 0) throw new Error(`pack ${this.pack}: write at ${at + done} wrote nothing`);
      done += bytesWritten;
    }
    return at;
  }

  async close(): Promise<void> {
    const h = this.handle;
    this.handle = undefined;
    this.onClose(this);
    await h?.close();
  }
}

function remainder(buffers: Buffer[], skip: number): Buffer[] {
  const out: Buffer[] = [];
  for (const b of buffers) {
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    out.push(skip > 0 ? b.subarray(skip) : b);
    skip = 0;
  }
  return out;
}

/** The pack directory of one store: reads through cached read-only handles, and space reclamation. */
export class PackFiles {
  readonly dir: string;
  private readonly readers = new Map<string, Promise<FileHandle>>();

  constructor(storeDir: string) {
    this.dir = join(storeDir, PACK_DIR);
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  path(pack: string): string {
    return join(this.dir, pack);
  }

  /** A new, empty pack for a writer (exclusive: ids are unique, a leftover file is garbage of a dead one). */
  async create(pack: string): Promise<FileHandle> {
    await unlink(this.path(pack)).catch(ignoreMissing);
    return open(this.path(pack), constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  }

  /** `length` bytes at `offset` of `pack`; shorter when the file is (a corrupt store). Throws ENOENT. */
  async read(pack: string, offset: number, length: number): Promise<Buffer> {
    const h = await this.reader(pack);
    const buf = Buffer.allocUnsafe(length);
    let got = 0;
    while (got < length) {
      const { bytesRead } = await h.read(buf, got, length - got, offset + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return got === length ? buf : buf.subarray(0, got);
  }

  /** Frees the blocks of chunks nothing references (the file keeps its size; the ranges read as zeros). */
  async punch(pack: string, ranges: Array<{ offset: number; length: number }>): Promise<void> {
    let h: FileHandle;
    try {
      h = await open(this.path(pack), 'r+');
    } catch (e) {
      ignoreMissing(e);
      return;
    }
    try {
      for (const r of ranges) native.punchHole(h.fd, r.offset, r.length);
    } finally {
      await h.close();
    }
  }

  async remove(pack: string): Promise<void> {
    await this.forget(pack);
    await unlink(this.path(pack)).catch(ignoreMissing);
  }

  /** Cuts what a writer that died appended past the data its committed batches recorded. */
  async truncateTo(pack: string, end: number): Promise<void> {
    try {
      if ((await stat(this.path(pack))).size > end) await truncate(this.path(pack), end);
    } catch (e) {
      ignoreMissing(e);
    }
  }

  /** Pack ids with a file on disk. */
  async list(): Promise<string[]> {
    return (await readdir(this.dir)).filter((n) => PACK_ID_RE.test(n));
  }

  /** Size and allocated bytes of a pack's file, or undefined when it has none. */
  async sizeOf(pack: string): Promise<{ size: number; allocated: number } | undefined> {
    try {
      const st = await stat(this.path(pack));
      return { size: st.size, allocated: st.blocks * 512 };
    } catch (e) {
      ignoreMissing(e);
      return undefined;
    }
  }

  /** Bytes the pack files occupy on disk (holes excluded). */
  async diskBytes(): Promise<number> {
    let total = 0;
    for (const pack of await this.list()) total += (await this.sizeOf(pack))?.allocated ?? 0;
    return total;
  }

  async close(): Promise<void> {
    const all = [...this.readers.keys()];
    await Promise.all(all.map((p) => this.forget(p)));
  }

  private reader(pack: string): Promise<FileHandle> {
    let h = this.readers.get(pack);
    if (h === undefined) {
      h = open(this.path(pack), 'r');
      this.readers.set(pack, h);
      h.catch(() => this.readers.delete(pack));
    }
    return h;
  }

  private async forget(pack: string): Promise<void> {
    const h = this.readers.get(pack);
    this.readers.delete(pack);
    if (h !== undefined) await (await h.catch(() => undefined))?.close();
  }
}

function ignoreMissing(e: unknown): void {
  if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
}
