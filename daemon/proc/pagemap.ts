/**
 * /proc/<pid>/pagemap: one little-endian u64 per virtual page
 * (Documentation/admin-guide/mm/pagemap.rst), at file offset (addr / 4096) * 8:
 *   bit 63     page present in RAM
 *   bit 62     page swapped (bits 0-4 swap type, 5-54 swap offset)
 *   bit 61     file-backed page or shared anonymous page
 *   bit 58     guard region (MADV_GUARD_INSTALL, Linux 6.15+)
 *   bit 57     write-protected by userfaultfd-wp
 *   bit 56     page exclusively mapped (since 4.2)
 *   bit 55     soft-dirty (CONFIG_MEM_SOFT_DIRTY; off on our kernels)
 *   bits 0-54  PFN when present; zero without CAP_SYS_ADMIN, so nothing here
 *              relies on it.
 *
 * Entries are read in big preads (up to 64K entries, 512 KiB, per call) and
 * tested on their high 32-bit word only, which holds every flag: no BigInt per
 * page. A dump asks for runs of pages it must store ({@link PagemapFile.scan}).
 *
 * Future fast path: the PAGEMAP_SCAN ioctl on the pagemap fd (Linux 6.7+)
 * returns ranges of pages by category (present, swapped, file, written...) in
 * one syscall, without an entry per page; it needs native code (an ioctl with
 * a struct pm_scan_arg), so it is not used yet.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import type { Vma } from './maps.js';
import { assertAlive, procPath, translateError } from './read.js';

export const PAGE_SIZE = 4096;
/** Largest number of entries read by one pread. */
export const PAGEMAP_CHUNK_ENTRIES = 64 * 1024;

/** Flag bits of the high 32-bit word of an entry (entry bit N is high-word bit N - 32). */
export const PM_HI = {
  present: 1 << 31,
  swapped: 1 << 30,
  fileOrSharedAnon: 1 << 29,
  guard: 1 << 26,
  uffdWp: 1 << 25,
  exclusive: 1 << 24,
  softDirty: 1 << 23,
} as const;
const PFN_HI_MASK = (1 << 23) - 1; // bits 32..54 of the PFN / swap field

/** A test on the high word of an entry. */
export type PageSelector = (hi: number) => boolean;

/**
 * Pages a dump must store for a private anonymous VMA: present or swapped.
 * A present page may be the shared zero page (after a read fault); the image
 * store drops zero pages, so it costs nothing.
 */
export const anonPageToDump: PageSelector = (hi) => (hi & (PM_HI.present | PM_HI.swapped)) !== 0;

/**
 * Pages a dump must store for a private file mapping: copied-on-write pages,
 * i.e. present and NOT file pages. A swapped page there is also a private
 * anonymous copy (page-cache pages are never swap entries in a PTE), so it is
 * stored too unless the kernel marks it as a file page (a migration entry).
 */
export const privateFilePageToDump: PageSelector = (hi) =>
  (hi & (PM_HI.present | PM_HI.swapped)) !== 0 && (hi & PM_HI.fileOrSharedAnon) === 0;

export interface PageRun {
  /** Address of the first page. */
  start: number;
  pages: number;
}

export interface PagemapEntry {
  present: boolean;
  swapped: boolean;
  fileOrSharedAnon: boolean;
  guard: boolean;
  uffdWp: boolean;
  exclusive: boolean;
  softDirty: boolean;
  /** PFN of a present page (0 without CAP_SYS_ADMIN), else null. */
  pfn: bigint | null;
  /** Swap type and offset of a swapped page, else null. */
  swap: { type: number; offset: bigint } | null;
}

/** The entries of one address range, kept raw (two u32 words per page). */
export class PagemapRange {
  constructor(
    readonly start: number,
    readonly pages: number,
    private readonly words: Uint32Array,
  ) {}

  get end(): number {
    return this.start + this.pages * PAGE_SIZE;
  }

  /** High 32 bits of entry `i`: every flag, see {@link PM_HI}. */
  hi(i: number): number {
    return this.words[2 * i + 1]!;
  }

  /** The raw 64-bit entry. */
  raw(i: number): bigint {
    return (BigInt(this.words[2 * i + 1]!) << 32n) | BigInt(this.words[2 * i]!);
  }

  present(i: number): boolean {
    return (this.hi(i) & PM_HI.present) !== 0;
  }

  swapped(i: number): boolean {
    return (this.hi(i) & PM_HI.swapped) !== 0;
  }

  fileOrSharedAnon(i: number): boolean {
    return (this.hi(i) & PM_HI.fileOrSharedAnon) !== 0;
  }

  exclusive(i: number): boolean {
    return (this.hi(i) & PM_HI.exclusive) !== 0;
  }

  entry(i: number): PagemapEntry {
    const hi = this.hi(i);
    const low55 = ((BigInt(hi & PFN_HI_MASK) << 32n) | BigInt(this.words[2 * i]!)) & ((1n << 55n) - 1n);
    const swapped = (hi & PM_HI.swapped) !== 0;
    return {
      present: (hi & PM_HI.present) !== 0,
      swapped,
      fileOrSharedAnon: (hi & PM_HI.fileOrSharedAnon) !== 0,
      guard: (hi & PM_HI.guard) !== 0,
      uffdWp: (hi & PM_HI.uffdWp) !== 0,
      exclusive: (hi & PM_HI.exclusive) !== 0,
      softDirty: (hi & PM_HI.softDirty) !== 0,
      pfn: (hi & PM_HI.present) !== 0 ? low55 : null,
      swap: swapped ? { type: Number(low55 & 0x1fn), offset: low55 >> 5n } : null,
    };
  }

  count(select: PageSelector): number {
    let n = 0;
    for (let i = 0; i < this.pages; i++) if (select(this.words[2 * i + 1]!)) n++;
    return n;
  }

  runs(select: PageSelector): PageRun[] {
    const out: PageRun[] = [];
    appendRuns(out, this.words, this.start, this.pages, select);
    return out;
  }
}

/** Appends runs of selected pages, merging with the last run when it ends at `start`. */
function appendRuns(out: PageRun[], words: Uint32Array, start: number, pages: number, select: PageSelector): void {
  let runStart = -1;
  const flush = (endIdx: number): void => {
    const addr = start + runStart * PAGE_SIZE;
    const n = endIdx - runStart;
    const last = out[out.length - 1];
    if (last && last.start + last.pages * PAGE_SIZE === addr) last.pages += n;
    else out.push({ start: addr, pages: n });
    runStart = -1;
  };
  for (let i = 0; i < pages; i++) {
    if (select(words[2 * i + 1]!)) {
      if (runStart < 0) runStart = i;
    } else if (runStart >= 0) {
      flush(i);
    }
  }
  if (runStart >= 0) flush(pages);
}

function checkRange(start: number, end: number): void {
  if (!Number.isInteger(start) || !Number.isInteger(end) || start % PAGE_SIZE !== 0 || end % PAGE_SIZE !== 0) {
    throw new RangeError(`pagemap range must be page aligned: 0x${start.toString(16)}-0x${end.toString(16)}`);
  }
  if (end < start) throw new RangeError(`pagemap range ends before it starts: 0x${start.toString(16)}`);
}

/** An open /proc/<pid>/pagemap, read range by range; close it when done. */
export class PagemapFile {
  private fd: number;
  private chunk: Uint32Array | null = null;

  constructor(
    readonly pid: number,
    readonly tid?: number,
  ) {
    try {
      this.fd = openSync(procPath(pid, 'pagemap', tid), 'r');
    } catch (e) {
      throw translateError(e, pid, tid);
    }
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }

  /** All entries of [start, end). Memory: 8 bytes per page. */
  read(start: number, end: number): PagemapRange {
    checkRange(start, end);
    const pages = (end - start) / PAGE_SIZE;
    const words = new Uint32Array(pages * 2);
    for (let done = 0; done < pages;) {
      const n = Math.min(PAGEMAP_CHUNK_ENTRIES, pages - done);
      this.pread(words.subarray(done * 2, (done + n) * 2), start + done * PAGE_SIZE, n);
      done += n;
    }
    return new PagemapRange(start, pages, words);
  }

  /** Runs of pages in [start, end) that `select` picks, streamed chunk by chunk (memory: one chunk). */
  scan(start: number, end: number, select: PageSelector): PageRun[] {
    checkRange(start, end);
    const pages = (end - start) / PAGE_SIZE;
    this.chunk ??= new Uint32Array(PAGEMAP_CHUNK_ENTRIES * 2);
    const out: PageRun[] = [];
    for (let done = 0; done < pages;) {
      const n = Math.min(PAGEMAP_CHUNK_ENTRIES, pages - done);
      const addr = start + done * PAGE_SIZE;
      this.pread(this.chunk.subarray(0, n * 2), addr, n);
      appendRuns(out, this.chunk, addr, n, select);
      done += n;
    }
    return out;
  }

  private pread(dest: Uint32Array, addr: number, entries: number): void {
    if (this.fd < 0) throw new Error(`pagemap of ${this.pid} is closed`);
    const buf = Buffer.from(dest.buffer, dest.byteOffset, entries * 8);
    // The offset of addresses above 2^62 (the [vsyscall] page) exceeds 2^53.
    const pos = (BigInt(addr) / BigInt(PAGE_SIZE)) * 8n;
    let got = 0;
    while (got < buf.length) {
      let n: number;
      try {
        n = readSync(this.fd, buf, got, buf.length - got, pos + BigInt(got));
      } catch (e) {
        throw translateError(e, this.pid, this.tid);
      }
      if (n === 0) break;
      got += n;
    }
    if (got === buf.length) return;
    // pagemap stops at the end of the task's address space, and at once when
    // the process has no memory any more (exited).
    assertAlive(this.pid, this.tid);
    const at = addr + (got / 8) * PAGE_SIZE;
    const where = `0x${at.toString(16)}`;
    throw new Error(`pagemap of ${this.pid} has no entry for ${where}: beyond the task size (e.g. [vsyscall])`);
  }
}

/** All entries of [start, end) of a process (opens and closes pagemap). */
export function readPagemap(pid: number, start: number, end: number, tid?: number): PagemapRange {
  const f = new PagemapFile(pid, tid);
  try {
    return f.read(start, end);
  } finally {
    f.close();
  }
}

/**
 * The runs of pages a dump must store for a private VMA: every present or
 * swapped page of anonymous memory ([heap], [stack], plain and named anonymous
 * memory), and the copied-on-write pages of a private file mapping. Shared
 * memory is dumped from its object, not page by page, and special mappings
 * ([vdso], [vvar], ...) are not dumped: both are errors here.
 * The unmodified pages of a private file mapping come back from the file; when
 * the file is unlinked (vma.deleted) the dump must keep its content some other
 * way (e.g. through /proc/<pid>/map_files), which is not this function's job.
 */
export function privatePageRuns(pagemap: PagemapFile, vma: Vma): PageRun[] {
  if (vma.shared) throw new Error(`privatePageRuns: ${describe(vma)} is a shared mapping`);
  const anon = vma.kind === 'anon' || vma.kind === 'heap' || vma.kind === 'stack' || vma.anonName !== null;
  if (anon) return pagemap.scan(vma.start, vma.end, anonPageToDump);
  if (vma.kind === 'file' || vma.kind === 'memfd') return pagemap.scan(vma.start, vma.end, privateFilePageToDump);
  throw new Error(`privatePageRuns: unsupported VMA kind '${vma.kind}' (${describe(vma)})`);
}

function describe(vma: Vma): string {
  return `0x${vma.start.toString(16)}-0x${vma.end.toString(16)} ${vma.path || '(anonymous)'}`;
}
