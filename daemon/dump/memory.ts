/**
 * Memory of a frozen process (proc(5) /proc/<pid>/smaps, pagemap, mem and map_files; mmap(2)): a record per
 * VMA, the runs of private pages to store (pagemap-guided: present or swapped anonymous pages, copied-on-write
 * pages of private file mappings; absent pages are zero and never read), and the shared anonymous objects the
 * process maps, each dumped once for the whole tree from its shmem file.
 */
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import {
  anonPageToDump,
  mapFilesPath,
  PAGE_SIZE,
  PM_HI,
  privatePageRuns,
  readSysvSegment,
  SHM_DEST,
  SHM_LOCKED,
  type PagemapFile,
  type PageRun,
  type SmapsVma,
  type VmFlag,
} from '../proc/index.js';
import type { Problem } from '../errors.js';
import { native } from '../../native/index.js';
import type { ShmemRecord, SysvShmRecord, VmaContent, VmaRecord } from './image.js';

/** The largest piece of memory read with one pread (and handed to the store in one addPages). */
export const READ_PAGES = 2048;
const SPECIAL_CONTENT: Record<string, VmaContent> = { vdso: 'vdso', vvar: 'vvar', vvar_vclock: 'vvar_vclock' };
/** VmFlags that mean the memory is not plain pages the restore can place. */
const REFUSED_FLAGS: Record<string, string> = {
  ss: 'a shadow stack',
  um: 'registered with a userfaultfd of the process (missing mode)',
  uw: 'registered with a userfaultfd of the process (write-protect mode)',
  ui: 'registered with a userfaultfd of the process (minor mode)',
  pf: 'device memory (VM_PFNMAP)',
  io: 'memory-mapped I/O (VM_IO)',
  mm: 'a driver mapping (VM_MIXEDMAP)',
};
/** Flags derived from other fields of the record, left out of vmFlags. */
const DERIVED_FLAGS = new Set(['rd', 'wr', 'ex', 'sh', 'ms', 'gd', 'ac', 'sd']);

/** A shared object (shared anonymous memory, a memfd) one process maps: where to read it from while the tree is
 *  frozen. */
export interface ShmemRef {
  id: string;
  size: number;
  /** `memfd`: a memfd_create(2) file (its name and seals); `sysv`: a System V segment; `anon`:
   *  MAP_SHARED|MAP_ANONYMOUS memory. */
  kind: 'anon' | 'memfd' | 'sysv';
  name?: string;
  seals?: number;
  sysv?: SysvShmRecord;
  /** A hugetlbfs object (MAP_SHARED|MAP_ANONYMOUS|MAP_HUGETLB, MFD_HUGETLB): its huge page size. */
  hugePageSize?: number;
  /** Pages of the object this process has mapped (smaps Rss + Swap of the VMA): a lower bound of its use. */
  mappedPages: number;
  pid: number;
  /** /proc/<pid>/map_files/<start>-<end> of one VMA mapping it. */
  path: string;
}

/** The image record of a shared object. */
export function shmemRecord(s: ShmemRef): ShmemRecord {
  const huge = s.hugePageSize !== undefined ? { hugePageSize: s.hugePageSize } : {};
  if (s.kind === 'memfd') return { id: s.id, size: s.size, kind: s.kind, name: s.name, seals: s.seals, ...huge };
  if (s.kind === 'sysv') return { id: s.id, size: s.size, kind: s.kind, sysv: s.sysv };
  return { id: s.id, size: s.size, ...huge };
}

export interface MemoryPlan {
  pid: number;
  vmas: VmaRecord[];
  problems: Problem[];
  /** Private pages to store under mm:<pid>, ascending. */
  runs: PageRun[];
  pages: number;
  /** Without a pagemap: the private pages smaps counts (Anonymous + Swap), an estimate of `pages`. */
  estimatedPages: number;
  shmem: ShmemRef[];
  /** Sizes of [vdso], [vvar], [vvar_vclock]. */
  specials: Array<{ name: string; size: number }>;
}

export function hexRange(v: { start: number; end: number }): string {
  return `0x${v.start.toString(16)}-0x${v.end.toString(16)}`;
}

function prot(v: SmapsVma): number {
  return (v.read ? 1 : 0) | (v.write ? 2 : 0) | (v.exec ? 4 : 0);
}

function baseRecord(v: SmapsVma, content: VmaContent): VmaRecord {
  const rec: VmaRecord = {
    start: v.start,
    end: v.end,
    prot: prot(v),
    shared: v.shared,
    growsDown: v.vmFlags.has('gd'),
    kind: v.kind === 'other' && v.anonName !== null ? 'anon' : v.kind,
    offset: v.offset,
    content,
    vmFlags: [...v.vmFlags].filter((f) => !DERIVED_FLAGS.has(f)).sort(),
  };
  if (v.anonName !== null) rec.anonName = v.anonName;
  return rec;
}

function isAnon(v: SmapsVma): boolean {
  return v.kind === 'anon' || v.kind === 'heap' || v.kind === 'stack' || (v.kind === 'other' && v.anonName !== null);
}

type VmaPlan =
  | { record: VmaRecord; runs?: boolean; shmem?: ShmemRef; special?: boolean; huge?: boolean }
  | { problem: string }
  | { skip: true };

function planFile(pid: number, v: SmapsVma): VmaPlan {
  if (v.deleted) return { problem: `maps the unlinked file ${v.path}` };
  let st;
  try {
    st = statSync(mapFilesPath(pid, v), { bigint: true });
  } catch (e) {
    return { problem: `maps ${v.path}, which cannot be identified (${String(e)})` };
  }
  if ((Number(st.mode) & 0o170000) !== 0o100000) return { problem: `maps ${v.path}, which is not a regular file` };
  const file = { path: v.path, dev: Number(st.dev), ino: Number(st.ino), size: Number(st.size) };
  try {
    const here = statSync(`/proc/${pid}/root${v.path}`, { bigint: true });
    if (Number(here.dev) !== file.dev || Number(here.ino) !== file.ino)
      return { problem: `maps ${v.path}, but that path now names another file (renamed or replaced)` };
  } catch {
    return { problem: `maps ${v.path}, which no longer exists at that path` };
  }
  return { record: { ...baseRecord(v, 'file'), file }, runs: !v.shared };
}

/** F_SEAL_SEAL: set on every memfd made without MFD_ALLOW_SEALING (fcntl(2), "File Sealing"). */
const F_SEAL_SEAL = 1;

const SYSV_NAME = /^\/SYSV[0-9a-f]{8}$/;

/**
 * A System V attach: its shmem file's inode number is the segment's id (ipc/shm.c sets it so), which finds the
 * segment in /proc/sysvipc/shm of our IPC namespace (the process is in the same one: checkProcess refuses others).
 */
function planSysv(pid: number, v: SmapsVma): VmaPlan {
  const path = mapFilesPath(pid, v);
  let seg;
  try {
    seg = readSysvSegment(Number(statSync(path, { bigint: true }).ino));
  } catch (e) {
    return { problem: `is System V shared memory (${v.path}) that cannot be identified (${String(e)})` };
  }
  if (!seg) return { problem: `is System V shared memory (${v.path}) absent from /proc/sysvipc/shm` };
  const sysv: SysvShmRecord = {
    key: seg.key,
    shmid: seg.shmid,
    mode: seg.mode & 0o777,
    uid: seg.uid,
    gid: seg.gid,
    removed: (seg.mode & SHM_DEST) !== 0,
    locked: (seg.mode & SHM_LOCKED) !== 0,
  };
  const id = `sysv-${seg.shmid}`;
  const mappedPages = (v.sizes.Rss + v.sizes.Swap) / PAGE_SIZE;
  const shmem: ShmemRef = { id, size: seg.size, kind: 'sysv', sysv, mappedPages, pid, path };
  return { record: { ...baseRecord(v, 'shmem'), shmem: id }, shmem };
}

function planShmem(pid: number, v: SmapsVma, hugePageSize?: number): VmaPlan {
  if (SYSV_NAME.test(v.path)) return planSysv(pid, v);
  const path = mapFilesPath(pid, v);
  const memfd = v.kind === 'memfd';
  let st;
  let seals = -1;
  try {
    st = statSync(path, { bigint: true });
    if (memfd) {
      const fd = openSync(path, 'r');
      try {
        seals = native.fileSeals(fd);
      } finally {
        closeSync(fd);
      }
    }
  } catch (e) {
    return { problem: `is shared memory that cannot be identified (${String(e)})` };
  }
  // Without MFD_ALLOW_SEALING a memfd has exactly F_SEAL_SEAL; with it, none until the program adds some. Other
  // seals (write, grow, shrink, exec) would have to be added back after the lazy fill, which needs writes.
  if (memfd && seals !== 0 && seals !== F_SEAL_SEAL)
    return { problem: `maps ${v.path}, a memfd with seals 0x${seals.toString(16)}, which restore cannot put back` };
  // Inode numbers are unique per filesystem: shmem objects live on the kernel's one shm mount, hugetlb ones on its
  // hugetlbfs mount of their page size, whose numbers may coincide with the first's.
  const id = hugePageSize !== undefined ? `hugetlb-${st.ino}` : String(st.ino);
  const mappedPages = (v.sizes.Rss + v.sizes.Swap) / PAGE_SIZE;
  const shmem: ShmemRef = memfd
    ? { id, size: Number(st.size), kind: 'memfd', name: v.path.slice('/memfd:'.length), seals, mappedPages, pid, path }
    : { id, size: Number(st.size), kind: 'anon', mappedPages, pid, path };
  if (hugePageSize !== undefined) return hugeShmem({ record: { ...baseRecord(v, 'shmem'), shmem: id }, shmem }, v);
  return { record: { ...baseRecord(v, 'shmem'), shmem: id }, shmem };
}

/** A shared hugetlb object: its huge page size on the object and the mapping, and what smaps counts of it
 *  (hugetlb pages are not in Rss). */
function hugeShmem(p: { record: VmaRecord; shmem: ShmemRef }, v: SmapsVma): VmaPlan {
  const size = v.sizes.KernelPageSize;
  p.shmem.hugePageSize = size;
  p.shmem.mappedPages = (v.sizes.Shared_Hugetlb + v.sizes.Private_Hugetlb) / PAGE_SIZE;
  p.record.hugePageSize = size;
  p.record.kind = p.shmem.kind === 'memfd' ? 'memfd' : 'shmem';
  p.record.vmFlags = p.record.vmFlags.filter((f) => f !== 'ht' && f !== 'de'); // implied by hugetlbfs
  return p;
}

/** The one huge page size restore recreates (MAP_HUGE_2MB). */
export const HUGE_PAGE_SIZE = 2 << 20;

/**
 * Hugetlb memory with 2 MiB pages: private anonymous MAP_HUGETLB memory (maps calls it "/anon_hugepage (deleted)")
 * is dumped like private memory, whole huge pages at a time (pagemap reports each 4 KiB piece of a present huge
 * page present); shared anonymous hugetlb memory and MFD_HUGETLB memfds mapped shared are shared objects, dumped
 * once from their hugetlbfs file (read(2) works there, write(2) does not). A file on a hugetlbfs mount mapped
 * shared is a file mapping: the file holds the data. Private mappings of a hugetlbfs file or a memfd and other huge
 * page sizes are refused, naming what they are.
 */
function planHugetlb(pid: number, v: SmapsVma): VmaPlan {
  const size = v.sizes.KernelPageSize;
  if (SYSV_NAME.test(v.path))
    return {
      problem: `is System V shared memory with huge pages (${v.path}, SHM_HUGETLB), which restore does not recreate`,
    };
  const anon = v.deleted && v.path === '/anon_hugepage';
  if (size !== HUGE_PAGE_SIZE)
    return { problem: `is hugetlb memory with ${size >> 10} KiB pages; restore recreates only 2 MiB huge pages` };
  if (!anon && v.kind !== 'memfd') return planHugetlbFile(pid, v);
  if (v.shared) return planShmem(pid, v, size);
  if (!anon) return { problem: `is a private mapping of a memfd (${v.path})` };
  const rec = { ...baseRecord(v, 'anon'), kind: 'anon', offset: 0, hugePageSize: size };
  rec.vmFlags = rec.vmFlags.filter((f) => f !== 'ht' && f !== 'de'); // implied by MAP_HUGETLB
  return { record: rec, runs: true, huge: true };
}

/** A file on a hugetlbfs mount: mapped shared, its pages live in the file (restore maps the file again, and the
 *  mount decides the page size); mapped private, its copied-on-write huge pages would have to be recreated. */
function planHugetlbFile(pid: number, v: SmapsVma): VmaPlan {
  if (!v.shared)
    return { problem: `is a private mapping of the hugetlbfs file ${v.path}, which restore does not recreate` };
  const p = planFile(pid, v);
  if ('record' in p) p.record.vmFlags = p.record.vmFlags.filter((f) => f !== 'ht' && f !== 'de'); // implied by the file
  return p;
}

function planVma(pid: number, v: SmapsVma): VmaPlan {
  if (v.kind === 'vsyscall') return { skip: true }; // the kernel's fixed page; every process gets the same one
  if (v.vmFlags.has('ht')) return planHugetlb(pid, v);
  for (const [flag, what] of Object.entries(REFUSED_FLAGS)) {
    // The kernel's own special mappings ([vvar] is VM_IO|VM_PFNMAP) are recreated by the restorer, not copied.
    if (v.vmFlags.has(flag as VmFlag) && !SPECIAL_CONTENT[v.kind]) return { problem: `is ${what}` };
  }
  if (v.sizes.KernelPageSize !== PAGE_SIZE) return { problem: `has ${v.sizes.KernelPageSize}-byte pages (hugetlb)` };
  const special = SPECIAL_CONTENT[v.kind];
  if (special) return { record: baseRecord(v, special), special: true };
  if (v.kind === 'memfd')
    return v.shared ? planShmem(pid, v) : { problem: `is a private mapping of a memfd (${v.path})` };
  if (v.kind === 'shmem') return v.shared ? planShmem(pid, v) : { problem: `is a private mapping of ${v.path}` };
  if (v.kind === 'file') return planFile(pid, v);
  if (isAnon(v)) {
    if (v.shared) return { problem: 'is shared anonymous memory of an unknown kind' };
    return { record: baseRecord(v, 'anon'), runs: true };
  }
  return { problem: `is ${v.path || 'an unnamed special mapping'}, which cannot be recreated` };
}

/**
 * The plan for one process's memory: records, refusals, and (with `pagemap`) the private page runs. Without a
 * pagemap (the preflight on a live process) only the records and refusals are computed.
 */
export function planMemory(pid: number, vmas: SmapsVma[], pagemap?: PagemapFile): MemoryPlan {
  const plan: MemoryPlan = {
    pid,
    vmas: [],
    problems: [],
    runs: [],
    pages: 0,
    estimatedPages: 0,
    shmem: [],
    specials: [],
  };
  for (const v of vmas) {
    const p = planVma(pid, v);
    if ('skip' in p) continue;
    if ('problem' in p) {
      const what = `mapping ${hexRange(v)}`;
      plan.problems.push({ code: 'UNSUPPORTED_MAPPING', pid, what, message: `process ${pid}: ${what} ${p.problem}` });
      continue;
    }
    plan.vmas.push(p.record);
    if (p.special) plan.specials.push({ name: v.kind, size: v.end - v.start });
    if (p.shmem) plan.shmem.push(p.shmem);
    if (p.runs) plan.estimatedPages += (v.sizes.Anonymous + v.sizes.Swap + v.sizes.Private_Hugetlb) / PAGE_SIZE;
    if (p.runs && pagemap) {
      if (pagemap.scan(v.start, v.end, (hi) => (hi & PM_HI.guard) !== 0).length > 0) {
        const what = `mapping ${hexRange(v)}`;
        const message = `process ${pid}: ${what} has guard regions (MADV_GUARD_INSTALL), which restore cannot recreate`;
        plan.problems.push({ code: 'UNSUPPORTED_MAPPING', pid, what, message });
        continue;
      }
      const runs = p.huge ? hugePageRuns(pagemap, v) : privatePageRuns(pagemap, v);
      for (const run of runs) {
        plan.runs.push(run);
        plan.pages += run.pages;
      }
    }
  }
  return plan;
}

/** The present huge pages of a hugetlb VMA, as runs of whole huge pages. */
function hugePageRuns(pagemap: PagemapFile, v: SmapsVma): PageRun[] {
  const out: PageRun[] = [];
  for (const r of pagemap.scan(v.start, v.end, anonPageToDump)) {
    const start = Math.floor(r.start / HUGE_PAGE_SIZE) * HUGE_PAGE_SIZE;
    const end = Math.min(v.end, Math.ceil((r.start + r.pages * PAGE_SIZE) / HUGE_PAGE_SIZE) * HUGE_PAGE_SIZE);
    const last = out[out.length - 1];
    if (last && last.start + last.pages * PAGE_SIZE >= start) {
      last.pages = Math.max(last.pages, (end - last.start) / PAGE_SIZE);
    } else out.push({ start, pages: (end - start) / PAGE_SIZE });
  }
  return out;
}

/** A piece of page data on its way to the store. */
export interface PagePiece {
  mmId: string;
  address: number;
  data: Buffer;
  /** One byte per page, 0 = absent (shared objects: all-zero pages are left out). */
  present?: Uint8Array;
}

/** Where page data is read into: a fresh Buffer of `bytes` bytes, or memory the caller recycles. */
export type Allocator = (bytes: number) => Buffer;

export const allocUnsafe: Allocator = (bytes) => Buffer.allocUnsafe(bytes);

/**
 * Memory for page data, allocated and touched before the tree is frozen: reading into fresh memory costs a
 * page fault per page of ours (slow the first time a VM touches its memory), which would otherwise lengthen
 * the freeze. Hands out consecutive pieces of 8 MiB slabs; falls back to fresh Buffers once exhausted.
 */
export class PagePool {
  private readonly slabs: Buffer[] = [];
  private slab = 0;
  private used = 0;

  constructor(pages: number) {
    const slabBytes = READ_PAGES * PAGE_SIZE;
    for (let left = pages * PAGE_SIZE; left > 0; left -= slabBytes) {
      this.slabs.push(Buffer.allocUnsafe(Math.min(slabBytes, left)).fill(0));
    }
  }

  readonly take: Allocator = (bytes) => {
    for (; this.slab < this.slabs.length; this.slab++, this.used = 0) {
      const s = this.slabs[this.slab]!;
      if (s.length - this.used >= bytes) {
        this.used += bytes;
        return s.subarray(this.used - bytes, this.used);
      }
    }
    return Buffer.allocUnsafe(bytes);
  };
}

/** Reads exactly `buf.length` bytes at `pos` (a short read means the memory is gone: an error). */
function preadFully(fd: number, buf: Buffer, pos: number, what: string): number {
  let got = 0;
  while (got < buf.length) {
    const n = readSync(fd, buf, got, buf.length - got, pos + got);
    if (n === 0) break;
    got += n;
  }
  if (got !== buf.length && what !== '') throw new Error(`${what}: short read at 0x${(pos + got).toString(16)}`);
  return got;
}

/**
 * The private pages of a plan, read from /proc/<pid>/mem in pieces of at most READ_PAGES pages, each into
 * memory from `alloc`.
 */
export function* readPrivatePages(plan: MemoryPlan, mmId: string, alloc: Allocator): Generator<PagePiece> {
  if (plan.runs.length === 0) return;
  const fd = openSync(`/proc/${plan.pid}/mem`, 'r');
  try {
    for (const run of plan.runs) {
      for (let done = 0; done < run.pages; done += READ_PAGES) {
        const pages = Math.min(READ_PAGES, run.pages - done);
        const address = run.start + done * PAGE_SIZE;
        const data = alloc(pages * PAGE_SIZE);
        preadFully(fd, data, address, `/proc/${plan.pid}/mem`);
        yield { mmId, address, data };
      }
    }
  } finally {
    closeSync(fd);
  }
}

const ZERO_PAGE = Buffer.alloc(PAGE_SIZE);

/**
 * The pages of a shared anonymous object, read through its shmem file (reads of holes return zeros without
 * allocating). Zero pages are absent in the image: for shared anonymous memory both mean "zero". Each piece is
 * read into one reused buffer and copied into memory from `alloc` only when it holds data.
 */
export function* readShmemPages(ref: ShmemRef, mmId: string, alloc: Allocator): Generator<PagePiece> {
  const fd = openSync(ref.path, 'r');
  const scratch = Buffer.allocUnsafe(READ_PAGES * PAGE_SIZE);
  try {
    for (let off = 0; off < ref.size; off += READ_PAGES * PAGE_SIZE) {
      const len = Math.ceil(Math.min(READ_PAGES * PAGE_SIZE, ref.size - off) / PAGE_SIZE) * PAGE_SIZE;
      const piece = scratch.subarray(0, len);
      piece.fill(0, preadFully(fd, piece, off, ''));
      const present = new Uint8Array(len / PAGE_SIZE);
      let any = false;
      for (let i = 0; i < present.length; i++) {
        if (piece.compare(ZERO_PAGE, 0, PAGE_SIZE, i * PAGE_SIZE, (i + 1) * PAGE_SIZE) !== 0) {
          present[i] = 1;
          any = true;
        }
      }
      if (!any) continue;
      const data = alloc(len);
      piece.copy(data);
      yield { mmId, address: off, data, present };
    }
  } finally {
    closeSync(fd);
  }
}
