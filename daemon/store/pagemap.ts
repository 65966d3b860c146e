/**
 * Page data in the store: 64 KiB windows, their chunks and their page map entries.
 *
 * A window is an aligned run of 16 pages of one address space. Its chunk holds the window's non-zero pages,
 * concatenated in address order; the chunk's key is sha256(u16 LE bitmap of those pages || data), so the same
 * content at the same offsets within a window is one chunk, wherever and however often it occurs. The page
 * map entry of a window (one per window that had present pages) is:
 *   u16 LE present   pages the dump saw present (pagemap bit 63, or "all" when the dump gave no flags)
 *   u16 LE bitmap    present pages with non-zero data, i.e. the pages in the chunk
 *   32 bytes         sha256 of the chunk, only when bitmap != 0
 * A page in present but not in bitmap is a zero page; a page in neither was not present when dumped.
 */
import { createHash } from 'node:crypto';
import { StoreError } from './errors.js';

export const PAGE_SIZE = 4096;
export const WINDOW_PAGES = 16;
export const WINDOW_SIZE = PAGE_SIZE * WINDOW_PAGES;

// Read-only reference page for zero detection; never written, so sharing it is safe.
const ZERO_PAGE = Buffer.alloc(PAGE_SIZE);
const EMPTY = Buffer.alloc(0);
const HASH_BYTES = 32;

/** One window of an address space as a reader sees it. */
export interface PageWindow {
  /** Window start (multiple of 64 KiB). */
  address: number;
  /** Bit i: page `address + i*4096` was present when dumped. */
  present: number;
  /** Bit i: page i has data in `data`; present pages outside `bitmap` are zero pages. */
  bitmap: number;
  /** popcount(bitmap) pages, in ascending page order. */
  data: Buffer;
}

/** A finished window on its way from a writer to the store. */
export interface SealedWindow {
  mmId: string;
  address: number;
  present: number;
  bitmap: number;
  data: Buffer;
  /** sha256 hex of the chunk; '' when bitmap is 0 (no chunk). */
  hash: string;
}

export interface MapEntry {
  present: number;
  bitmap: number;
  /** sha256 hex; '' when bitmap is 0. */
  hash: string;
}

export function windowOf(address: number): number {
  return address - (address % WINDOW_SIZE);
}

export function popcount16(x: number): number {
  let n = 0;
  for (let v = x & 0xffff; v !== 0; v &= v - 1) n++;
  return n;
}

export function isZeroPage(buf: Buffer, offset: number): boolean {
  return buf.compare(ZERO_PAGE, 0, PAGE_SIZE, offset, offset + PAGE_SIZE) === 0;
}

export function chunkHash(bitmap: number, data: Buffer): string {
  const head = Buffer.allocUnsafe(2);
  head.writeUInt16LE(bitmap, 0);
  return createHash('sha256').update(head).update(data).digest('hex');
}

export function encodeMapEntry(present: number, bitmap: number, hash: string): Buffer {
  const out = Buffer.allocUnsafe(bitmap === 0 ? 4 : 4 + HASH_BYTES);
  out.writeUInt16LE(present, 0);
  out.writeUInt16LE(bitmap, 2);
  if (bitmap !== 0) out.write(hash, 4, HASH_BYTES, 'hex');
  return out;
}

/** Undefined when the value is not a well-formed entry (the caller reports CORRUPT_IMAGE with context). */
export function decodeMapEntry(value: Buffer): MapEntry | undefined {
  if (value.length < 4) return undefined;
  const present = value.readUInt16LE(0);
  const bitmap = value.readUInt16LE(2);
  if ((bitmap & ~present) !== 0 || present === 0) return undefined;
  if (bitmap === 0) return value.length === 4 ? { present, bitmap, hash: '' } : undefined;
  if (value.length !== 4 + HASH_BYTES) return undefined;
  return { present, bitmap, hash: value.toString('hex', 4) };
}

/** Whether `data` is the chunk `entry` names: right length and right content hash. */
export function chunkMatches(entry: MapEntry, data: Buffer): boolean {
  return data.length === popcount16(entry.bitmap) * PAGE_SIZE && chunkHash(entry.bitmap, data) === entry.hash;
}

export interface AddCounts {
  /** Present pages with data. */
  pages: number;
  /** Present pages that were all zeros. */
  zeroPages: number;
}

/**
 * Cuts the runs of one address space into windows. Runs must come in ascending address order and may start
 * and end anywhere; the window that a run ends in stays open until a later run moves past it or finish().
 */
export class WindowAssembler {
  private window = -1;
  private present = 0;
  private bitmap = 0;
  private readonly slots: Array<Buffer | undefined> = new Array<Buffer | undefined>(WINDOW_PAGES);
  /** Lowest page address a run may start at. */
  private next = 0;

  constructor(readonly mmId: string) {}

  add(address: number, data: Buffer, flags: Uint8Array | undefined, emit: (w: SealedWindow) => void): AddCounts {
    if (address < this.next) {
      throw new StoreError(
        'INVALID_ARGUMENT',
        `pages of address space ${this.mmId} must come in ascending order: 0x${address.toString(16)} after 0x${(this.next - PAGE_SIZE).toString(16)}`,
        { mmId: this.mmId, address },
      );
    }
    const counts: AddCounts = { pages: 0, zeroPages: 0 };
    const n = data.length / PAGE_SIZE;
    for (let i = 0; i < n; i++) {
      if (flags !== undefined && flags[i] === 0) continue;
      const page = address + i * PAGE_SIZE;
      const window = windowOf(page);
      if (window !== this.window) this.seal(emit, window);
      const index = (page - window) / PAGE_SIZE;
      this.present |= 1 << index;
      const offset = i * PAGE_SIZE;
      if (isZeroPage(data, offset)) {
        counts.zeroPages++;
      } else {
        this.bitmap |= 1 << index;
        this.slots[index] = data.subarray(offset, offset + PAGE_SIZE);
        counts.pages++;
      }
      if (index === WINDOW_PAGES - 1) this.seal(emit, -1);
    }
    this.next = address + data.length;
    this.detach(data);
    return counts;
  }

  finish(emit: (w: SealedWindow) => void): void {
    this.seal(emit, -1);
  }

  /** The open window may outlive this call, and the caller may reuse its buffer: keep copies of its pages. */
  private detach(data: Buffer): void {
    for (let i = 0; i < WINDOW_PAGES; i++) {
      const slot = this.slots[i];
      if (slot !== undefined && slot.buffer === data.buffer) this.slots[i] = Buffer.from(slot);
    }
  }

  private seal(emit: (w: SealedWindow) => void, nextWindow: number): void {
    if (this.present !== 0) {
      const pages: Buffer[] = [];
      for (let i = 0; i < WINDOW_PAGES; i++) {
        const slot = this.slots[i];
        if (slot !== undefined) pages.push(slot);
      }
      const data = pages.length === 0 ? EMPTY : Buffer.concat(pages, pages.length * PAGE_SIZE);
      const hash = this.bitmap === 0 ? '' : chunkHash(this.bitmap, data);
      emit({ mmId: this.mmId, address: this.window, present: this.present, bitmap: this.bitmap, data, hash });
    }
    this.window = nextWindow;
    this.present = 0;
    this.bitmap = 0;
    this.slots.fill(undefined);
  }
}
