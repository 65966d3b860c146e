/**
 * The memory layout of a restored process (mmap(2), mremap(2), munmap(2), madvise(2), mlock2(2), mseal(2),
 * prctl(2) PR_SET_VMA_ANON_NAME, proc(5) /proc/<pid>/mem and map_files).
 *
 * In the pristine helper: map our region (gadget + scratch) at an address neither the helper nor the image uses,
 * move execution there, unmap everything the helper had except its vDSO/vvar, park those at a free address and
 * move them to where the dump had them; then map every VMA of the image at its address with its protection and
 * flags, and write the pages that must be present before the task runs (all of them for an eager restore).
 */
import { ftruncateSync, readFileSync } from 'node:fs';
import { native, UFFD_FEATURES } from '../../native/index.js';
import { readMaps, type Vma } from '../proc/index.js';
import { LazyRestoreError } from '../errors.js';
import { mmIdOf, type MmRecord, type ShmemRecord, type ThreadRecord, type VmaRecord } from '../dump/image.js';
import { createHugeShmem } from './hugeshm.js';
import type { ProcTask, RestoreContext } from './context.js';
import { REGION_SIZE } from './context.js';
import { writeMem, type Arg, type Batch, type Ref } from './inject.js';
import type { NodeFiles } from './files.js';
import type { RestoreImage } from './image.js';
import { anonObjectInTask, fileWriter, writeObject } from './objects.js';
import { attachSysv, isSysvVma, sysvSpans, type SysvSegmentPlan } from './sysv.js';
import {
  MADV,
  MAP,
  MAP_HUGE_SHIFT,
  MFD,
  MLOCK_ONFAULT,
  MREMAP_FIXED,
  MREMAP_MAYMOVE,
  PAGE,
  PR,
  PR_SET_VMA_ANON_NAME,
  PROT,
  SYS,
} from './sys.js';

const GADGET = Buffer.from([0x0f, 0x05, 0xcc]); // syscall; int3
const SPECIALS = new Set(['vdso', 'vvar', 'vvar_vclock']);
/** Lowest address searched for free room (below it sit non-PIE executables and the helper). */
const SEARCH_FROM = 0x1000_0000;
const USER_END = 0x7fff_ffff_f000;

/** VmFlags and what restore does with each (flags not listed here refuse the restore). */
const MADVISE: Record<string, number> = {
  dd: MADV.DONTDUMP,
  dc: MADV.DONTFORK,
  wf: MADV.WIPEONFORK,
  hg: MADV.HUGEPAGE,
  nh: MADV.NOHUGEPAGE,
  mg: MADV.MERGEABLE,
  sr: MADV.SEQUENTIAL,
  rr: MADV.RANDOM,
};
/** Flags that follow from how the mapping is made (may-read/write/exec, no-reserve, locking, ...). */
const HANDLED = new Set(['mr', 'mw', 'me', 'nr', 'lo', 'lf', 'dp', 'sl', 'dw', ...Object.keys(MADVISE)]);
/** Flags of the kernel's special mappings, which are moved, not made. */
const SPECIAL_FLAGS = new Set(['pf', 'io', 'de', 'dd', 'ar', 'mr', 'mw', 'me']);

function hexRange(v: { start: number; end: number }): string {
  return `0x${v.start.toString(16)}-0x${v.end.toString(16)}`;
}

/** Refuses, before anything is created, mappings whose flags this restore cannot reproduce. */
export function checkVmas(img: RestoreImage): void {
  for (const p of img.processes) {
    for (const v of p.record?.vmas ?? []) {
      const allowed = SPECIALS.has(v.content) ? SPECIAL_FLAGS : HANDLED;
      const bad = v.vmFlags.filter((f) => !allowed.has(f));
      if (bad.length > 0) {
        throw new LazyRestoreError(
          'UNSUPPORTED_IMAGE',
          `process ${p.entry.pid}: mapping ${hexRange(v)} has VmFlags ${bad.join(' ')}, which restore cannot reproduce`,
          { pid: p.entry.pid },
        );
      }
      if (v.content === 'shmem' && (v.shmem === undefined || !img.shmem.has(v.shmem))) {
        throw new LazyRestoreError(
          'CORRUPT_IMAGE',
          `process ${p.entry.pid}: mapping ${hexRange(v)} names a shared object the image lacks`,
        );
      }
    }
  }
}

/** Whether a VMA can be registered with the uffd and left to fault: not locked (mlock populates it at once),
 *  not droppable, not PROT_NONE (as for private memory: nothing may touch it, and mprotect would need care). */
function registrable(v: VmaRecord): boolean {
  return v.prot !== 0 && !v.vmFlags.includes('lo') && !v.vmFlags.includes('lf') && !v.vmFlags.includes('dp');
}

/** The uffd feature that lets a shared object's mappings be registered in missing mode: hugetlbfs objects fault
 *  through UFFD_FEATURE_MISSING_HUGETLBFS, shmem ones through UFFD_FEATURE_MISSING_SHMEM. */
export function shmemFeature(s: ShmemRecord): number {
  return s.hugePageSize !== undefined
    ? UFFD_FEATURES.UFFD_FEATURE_MISSING_HUGETLBFS
    : UFFD_FEATURES.UFFD_FEATURE_MISSING_SHMEM;
}

/** Notes the objects the kernel's userfaultfd cannot leave lazy, by kind; returns their ids. */
function noteUnoffered(objects: ShmemRecord[], offered: number, notes: string[]): Set<string> {
  const out = new Set<string>();
  for (const [huge, what, feature] of [
    [false, 'shared memory', 'UFFD_FEATURE_MISSING_SHMEM'],
    [true, 'shared hugetlb memory', 'UFFD_FEATURE_MISSING_HUGETLBFS'],
  ] as const) {
    const list = objects.filter((s) => (s.hugePageSize !== undefined) === huge && (offered & shmemFeature(s)) === 0);
    if (list.length === 0) continue;
    for (const s of list) out.add(s.id);
    const mib = list.reduce((n, s) => n + s.size, 0) / 2 ** 20;
    notes.push(
      `${what} (${list.length} object(s), ${mib.toFixed(1)} MiB) restored eagerly: this kernel's ` +
        `userfaultfd lacks ${feature}`,
    );
  }
  return out;
}

/**
 * Which shared objects a lazy restore leaves lazy: all of them whose kind the kernel's userfaultfd can register
 * (see shmemFeature), except an object some process maps in a way that cannot be registered. Every mapping of a
 * lazy object must be registered: a task that touched an absent page through an unregistered mapping would put a
 * zero page into the object, for every task, in place of its data. The summary notes each object restored eagerly
 * and why.
 */
export function planLazyShmem(img: RestoreImage, eager: boolean, offered: number, notes: string[]): Set<string> {
  const lazy = new Set<string>();
  // System V segments never are (daemon/restore/sysv.ts says why).
  const objects = [...img.shmem.values()].filter((s) => s.kind !== 'sysv');
  if (eager || objects.length === 0) return lazy;
  const unoffered = noteUnoffered(objects, offered, notes);
  for (const { id } of objects) {
    if (unoffered.has(id)) continue;
    const bad = img.processes.flatMap((p) =>
      (p.record?.vmas ?? []).filter((v) => v.shmem === id && !registrable(v)).map((v) => ({ pid: p.entry.pid, v })),
    );
    if (bad.length === 0) lazy.add(id);
    else {
      notes.push(
        `shared object ${id} restored eagerly: process ${bad[0]!.pid} maps it at ${hexRange(bad[0]!.v)} ` +
          'locked, droppable or PROT_NONE, which cannot be left lazy',
      );
    }
  }
  return lazy;
}

/** Whether hugetlb memory is left lazy: with UFFD_FEATURE_MISSING_HUGETLBFS; else it is written before the tree runs,
 *  and the summary says so. */
export function planLazyHuge(img: RestoreImage, eager: boolean, offered: number, notes: string[]): boolean {
  if (eager) return false;
  if ((offered & UFFD_FEATURES.UFFD_FEATURE_MISSING_HUGETLBFS) !== 0) return true;
  const bytes = img.processes.reduce(
    (n, p) => n + (p.record?.vmas ?? []).reduce((m, v) => m + (v.hugePageSize ? v.end - v.start : 0), 0),
    0,
  );
  if (bytes > 0) {
    notes.push(
      `hugetlb memory (${(bytes / 2 ** 20).toFixed(1)} MiB) restored eagerly: this kernel's userfaultfd lacks ` +
        'UFFD_FEATURE_MISSING_HUGETLBFS',
    );
  }
  return false;
}

/** Whether a shared-object VMA is restored lazily (its object is in `lazyShmem`). */
export function isLazyShmemVma(v: VmaRecord, lazyShmem: Set<string>): boolean {
  return v.content === 'shmem' && v.shmem !== undefined && lazyShmem.has(v.shmem);
}

const HUGEPAGES_DIR = '/sys/kernel/mm/hugepages';

/** Huge pages of `size` bytes this host can still hand out: free minus those reserved by existing mappings. */
export function availableHugePages(size: number): number {
  const dir = `${HUGEPAGES_DIR}/hugepages-${size >> 10}kB`;
  try {
    const read = (f: string) => Number(readFileSync(`${dir}/${f}`, 'utf8').trim());
    return read('free_hugepages') - read('resv_hugepages');
  } catch {
    return 0; // no such pool: this kernel or machine has no huge pages of that size
  }
}

/**
 * Refuses, before anything is created, an image whose hugetlb memory this host cannot back: a private MAP_HUGETLB
 * mapping reserves its huge pages when it is made (unless MAP_NORESERVE), so without them the mmap fails half-way
 * through a restore, or (no reservation) a fault would kill the task with SIGBUS later.
 */
export function checkHugePages(img: RestoreImage, available = availableHugePages): void {
  const need = new Map<number, { pages: number; where: string }>();
  const add = (size: number, pages: number, where: string): void => {
    const n = need.get(size) ?? { pages: 0, where };
    n.pages += pages;
    need.set(size, n);
  };
  for (const p of img.processes) {
    for (const v of p.record?.vmas ?? []) {
      // Mappings of a shared object share its reservation (counted below, once).
      if (v.hugePageSize === undefined || v.content === 'shmem') continue;
      add(v.hugePageSize, (v.end - v.start) / v.hugePageSize, `process ${p.entry.pid} at ${hexRange(v)}`);
    }
  }
  // A MAP_SHARED hugetlb mapping reserves the object's huge pages in its file, once for every mapping of it; the
  // whole object, since its pages outside any mapping are restored too.
  for (const s of img.shmem.values()) {
    if (s.hugePageSize !== undefined) add(s.hugePageSize, Math.ceil(s.size / s.hugePageSize), `shared object ${s.id}`);
  }
  for (const [size, n] of need) {
    const have = available(size);
    if (have < n.pages) {
      throw new LazyRestoreError(
        'HUGE_PAGES_UNAVAILABLE',
        `the image maps ${n.pages} huge page(s) of ${size >> 10} KiB (first: ${n.where}), this host has ` +
          `${Math.max(0, have)} free (see /proc/sys/vm/nr_hugepages): nothing was restored`,
      );
    }
  }
}

/** Lowest page-aligned address >= SEARCH_FROM where `size` bytes overlap none of `used`. */
export function findGap(used: Array<{ start: number; end: number }>, size: number): number {
  const sorted = [...used].sort((a, b) => a.start - b.start);
  let at = SEARCH_FROM;
  for (const r of sorted) {
    if (r.end <= at) continue;
    if (r.start >= at + size) break;
    at = Math.ceil(r.end / PAGE) * PAGE;
  }
  if (at + size > USER_END)
    throw new LazyRestoreError('RESTORE_FAILED', `no free room of ${size} bytes in the address space`);
  return at;
}

/** Whether an anonymous VMA is restored lazily (registered with the uffd) rather than written before it runs.
 *  Hugetlb memory only with `hugeLazy` (the kernel offers UFFD_FEATURE_MISSING_HUGETLBFS). */
export function isLazyVma(v: VmaRecord, hugeLazy = false): boolean {
  return (
    v.content === 'anon' &&
    (v.hugePageSize === undefined || hugeLazy) &&
    !v.shared &&
    v.prot !== 0 &&
    !v.vmFlags.includes('lo') &&
    !v.vmFlags.includes('lf') &&
    !v.vmFlags.includes('dp')
  );
}

/**
 * Pages the kernel or the first instructions touch before the page service could serve them: the page under
 * each thread's stack pointer (and the red zone below it) and its rseq area (the kernel writes it on every return
 * to user space, including the injections that follow the registration). Also the argument and environment
 * strings: other processes read them through /proc/<pid>/cmdline and environ, and a remote read of a page that
 * is still lazy fails instead of waiting (ps would show an empty command line).
 */
export function eagerPages(threads: ThreadRecord[], mm: MmRecord): Set<number> {
  const out = new Set<number>();
  const page = (a: number) => Math.floor(a / PAGE) * PAGE;
  const range = (start: number, end: number): void => {
    for (let a = page(start); a < end; a += PAGE) out.add(a);
  };
  for (const t of threads) {
    const rsp = Number(Buffer.from(t.regs, 'base64').readBigUInt64LE(152));
    out.add(page(rsp));
    out.add(page(rsp - 256));
    if (t.rseq) range(t.rseq.ptr, t.rseq.ptr + t.rseq.len);
  }
  range(mm.argStart, mm.argEnd);
  range(mm.envStart, mm.envEnd);
  return out;
}

/** What the image's mappings occupy, System V attaches with their whole segment (made whole, then cut). */
function occupied(ctx: RestoreContext, task: ProcTask): Array<{ start: number; end: number }> {
  const vmas = task.image.record!.vmas;
  return [...vmas, ...sysvSpans(vmas, ctx.sysv)];
}

/** Maps our region through the helper's own gadget, then runs everything else from it. */
export async function enterRegion(ctx: RestoreContext, task: ProcTask): Promise<Vma[]> {
  const helper = readMaps(task.pid);
  const start = findGap([...helper, ...occupied(ctx, task)], REGION_SIZE);
  const b = ctx.batch(task);
  const flags = MAP.PRIVATE | MAP.ANONYMOUS | MAP.FIXED_NOREPLACE;
  b.call('mmap(region)', SYS.mmap, [start, REGION_SIZE, PROT.READ | PROT.WRITE | PROT.EXEC, flags, -1, 0]);
  const [got] = await b.run();
  if (Number(got) !== start)
    throw new LazyRestoreError('RESTORE_FAILED', `process ${task.pid}: region mapped at ${got}, not ${start}`);
  writeMem(task.memFd, start, GADGET);
  task.region = { start, size: REGION_SIZE };
  task.gadget = start;
  task.scratch = { start: start + PAGE, size: REGION_SIZE - PAGE };
  return helper;
}

/** Unmaps the helper's own mappings and moves its vDSO/vvar to the dumped addresses (or drops them). */
export async function clearHelper(ctx: RestoreContext, task: ProcTask, helper: Vma[]): Promise<void> {
  const vmas = task.image.record!.vmas;
  const b = ctx.batch(task);
  const specials = helper.filter((m) => SPECIALS.has(m.kind));
  for (const m of helper) {
    if (m.kind === 'vsyscall' || SPECIALS.has(m.kind)) continue;
    b.call(`munmap(${hexRange(m)})`, SYS.munmap, [m.start, m.end - m.start]);
  }
  for (const v of vmas) {
    if (SPECIALS.has(v.content) && !specials.some((m) => m.kind === v.content)) {
      throw new LazyRestoreError('IMAGE_INCOMPATIBLE', `process ${task.pid}: this kernel gives no [${v.content}]`);
    }
  }
  // Parked first: a destination may overlap where another special sits now.
  const total = specials.reduce((n, m) => n + m.end - m.start, 0);
  const region = { start: task.region!.start, end: task.region!.start + REGION_SIZE };
  let park = findGap([...helper, ...occupied(ctx, task), region], total);
  const parked: Array<{ kind: string; at: number; size: number }> = [];
  for (const m of specials) {
    const size = m.end - m.start;
    b.call(`mremap([${m.kind}] to park)`, SYS.mremap, [m.start, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, park]);
    parked.push({ kind: m.kind, at: park, size });
    park += size;
  }
  for (const p of parked) {
    const dest = vmas.find((v) => v.content === p.kind);
    if (dest) {
      b.call(`mremap([${p.kind}])`, SYS.mremap, [p.at, p.size, p.size, MREMAP_MAYMOVE | MREMAP_FIXED, dest.start]);
    } else {
      b.call(`munmap([${p.kind}])`, SYS.munmap, [p.at, p.size]);
    }
  }
  await b.run();
}

/**
 * Creates the shared objects this process is the first to map, and writes the contents of those restored eagerly
 * (a lazy one stays empty: its pages arrive through the uffds of the tasks that map it). A memfd is made by the
 * restoring process with its name and sealing mode (its owner does not matter); shared anonymous memory in the
 * task, so that it is a `/dev/zero (deleted)` shmem object like the original.
 */
export async function createShmem(ctx: RestoreContext, task: ProcTask, files: NodeFiles): Promise<number> {
  let bytes = 0;
  const ids = [...new Set(task.image.record!.vmas.flatMap((v) => (v.content === 'shmem' && v.shmem ? [v.shmem] : [])))];
  for (const id of ids) {
    if (ctx.sysv.has(id)) continue; // made and filled before the tree (fillSysv)
    if (files.shmemFd(id) !== undefined) continue;
    const rec = ctx.img.shmem.get(id)!;
    if (rec.hugePageSize !== undefined) {
      bytes += await createHugeShmem(ctx, task, files, id);
      continue;
    }
    const size = rec.size;
    if (rec.kind === 'memfd') {
      const fd = native.memfdCreate(rec.name ?? '', rec.seals === 0 ? MFD.ALLOW_SEALING : 0);
      files.setShmemFd(id, fd);
      ftruncateSync(fd, size);
    } else {
      const { at, fd } = await anonObjectInTask(ctx, task, id, size);
      files.setShmemFd(id, fd);
      const b = ctx.batch(task);
      b.call(`munmap(shared object ${id})`, SYS.munmap, [at, size]);
      await b.run();
    }
    if (!ctx.lazyShmem.has(id)) bytes += await writeObject(ctx, id, fileWriter(files.shmemFd(id)!));
  }
  return bytes;
}

function mapFlags(v: VmaRecord): number {
  let flags = MAP.FIXED_NOREPLACE;
  if (v.vmFlags.includes('dp')) flags |= MAP.DROPPABLE;
  else flags |= v.shared ? MAP.SHARED : MAP.PRIVATE;
  if (v.content === 'anon') flags |= MAP.ANONYMOUS;
  // A mapping of a hugetlb object gets its page size from the object's file.
  if (v.hugePageSize !== undefined && v.content === 'anon')
    flags |= MAP.HUGETLB | (Math.log2(v.hugePageSize) << MAP_HUGE_SHIFT);
  if (v.growsDown) flags |= MAP.GROWSDOWN;
  if (v.vmFlags.includes('nr')) flags |= MAP.NORESERVE;
  return flags;
}

/**
 * Maps every VMA of the image (not the specials, already in place). System V attaches come first (attachSysv);
 * file and other shared-object mappings take their fd with pidfd_getfd from the task's pidfd for the restoring
 * process, one per object, closed again at the end.
 */
export function mapVmas(
  b: Batch,
  task: ProcTask,
  files: NodeFiles,
  restorerPidfd: Arg,
  sysv: Map<string, SysvSegmentPlan>,
): void {
  const fds = new Map<number, Ref>();
  const fdOf = (nodeFd: number): Ref => {
    let ref = fds.get(nodeFd);
    if (!ref) {
      ref = b.call(`pidfd_getfd(${nodeFd})`, SYS.pidfd_getfd, [restorerPidfd, nodeFd, 0]);
      fds.set(nodeFd, ref);
    }
    return ref;
  };
  attachSysv(b, task.image.record!.vmas, sysv);
  for (const v of task.image.record!.vmas) {
    if (SPECIALS.has(v.content)) continue;
    const len = v.end - v.start;
    const what = `mmap(${hexRange(v)}${v.file ? ' ' + v.file.path : ''})`;
    if (v.content === 'anon') {
      b.call(what, SYS.mmap, [v.start, len, v.prot, mapFlags(v), -1, 0]);
    } else if (!isSysvVma(v, sysv)) {
      const nodeFd = v.content === 'shmem' ? files.shmemFd(v.shmem!)! : files.mappingFd(v);
      b.call(what, SYS.mmap, [v.start, len, v.prot, mapFlags(v), fdOf(nodeFd), v.offset]);
    }
    for (const flag of v.vmFlags) {
      const advice = MADVISE[flag];
      if (advice !== undefined) b.call(`madvise(${hexRange(v)}, ${flag})`, SYS.madvise, [v.start, len, advice]);
    }
    if (v.anonName !== undefined) {
      b.call(`prctl(PR_SET_VMA_ANON_NAME ${hexRange(v)})`, SYS.prctl, [
        PR.SET_VMA,
        PR_SET_VMA_ANON_NAME,
        v.start,
        len,
        b.putString(v.anonName),
      ]);
    }
  }
  for (const ref of fds.values()) b.call('close', SYS.close, [ref]);
}

/** After the contents are written: mlock what was locked, mseal what was sealed. */
export function finishVmas(b: Batch, task: ProcTask): void {
  for (const v of task.image.record!.vmas) {
    const len = v.end - v.start;
    if (v.vmFlags.includes('lf')) b.call(`mlock2(${hexRange(v)}, ONFAULT)`, SYS.mlock2, [v.start, len, MLOCK_ONFAULT]);
    else if (v.vmFlags.includes('lo')) b.call(`mlock(${hexRange(v)})`, SYS.mlock, [v.start, len]);
  }
  for (const v of task.image.record!.vmas) {
    if (v.vmFlags.includes('sl')) b.call(`mseal(${hexRange(v)})`, SYS.mseal, [v.start, v.end - v.start, 0]);
  }
}

interface WriteRange {
  start: number;
  end: number;
  /** Private file mapping: a present page without data is a dirty page of zeros, not the file's bytes. */
  file: boolean;
}

/** The ranges of private memory to write before the task runs: all of it eagerly, else what cannot wait. */
function writeRanges(task: ProcTask, eager: boolean, hugeLazy: boolean): WriteRange[] {
  const rec = task.image.record!;
  const pages = eager ? new Set<number>() : eagerPages(task.image.threads, rec.mm);
  const out: WriteRange[] = [];
  for (const v of rec.vmas) {
    if (v.content === 'file' && !v.shared) out.push({ start: v.start, end: v.end, file: true });
    else if (v.content === 'anon' && (eager || !isLazyVma(v, hugeLazy)))
      out.push({ start: v.start, end: v.end, file: false });
    else if (v.content === 'anon') {
      // In hugetlb memory, the whole huge page: a write makes it present, and the uffd never faults on it again.
      const unit = v.hugePageSize ?? PAGE;
      for (const p of pages) {
        const at = Math.floor(p / unit) * unit;
        if (p >= v.start && p < v.end) out.push({ start: at, end: at + unit, file: false });
      }
    }
  }
  out.sort((a, b) => a.start - b.start);
  const merged: WriteRange[] = [];
  for (const r of out) {
    const last = merged[merged.length - 1];
    if (last && last.file === r.file && last.end === r.start) last.end = r.end;
    else if (!last || last.end <= r.start) merged.push({ ...r });
  }
  return merged;
}

const ZERO_PAGE = Buffer.alloc(PAGE);
/** Ranges closer than this are read with one pass over the store (the pages between are skipped). */
const READ_GAP = 1 << 20;
/** Store reads in flight at once while writing the contents of one process. */
const READ_CONCURRENCY = 4;

interface Span {
  start: number;
  end: number;
  ranges: WriteRange[];
}

function spansOf(ranges: WriteRange[]): Span[] {
  const spans: Span[] = [];
  for (const r of ranges) {
    const last = spans[spans.length - 1];
    if (last && r.start - last.end < READ_GAP) {
      last.end = r.end;
      last.ranges.push(r);
    } else {
      spans.push({ start: r.start, end: r.end, ranges: [r] });
    }
  }
  return spans;
}

/** One pass over the store for a span; writes the pages that fall in its ranges. Returns the bytes written. */
async function writeSpan(ctx: RestoreContext, task: ProcTask, span: Span): Promise<number> {
  let bytes = 0;
  let i = 0;
  // Pages arrive in ascending order, so the range lookup only moves forward.
  const rangeOf = (a: number): WriteRange | undefined => {
    while (i < span.ranges.length && span.ranges[i]!.end <= a) i++;
    const r = span.ranges[i];
    return r && a >= r.start ? r : undefined;
  };
  for await (const w of ctx.store.pages(ctx.img.id, mmIdOf(task.pid), { from: span.start, to: span.end })) {
    let k = 0;
    let runStart = -1;
    let runFirst = 0;
    const flush = (): void => {
      if (runStart < 0) return;
      const data = w.data.subarray(runFirst * PAGE, k * PAGE);
      writeMem(task.memFd, runStart, data);
      bytes += data.length;
      runStart = -1;
    };
    for (let p = 0; p < 16; p++) {
      const addr = w.address + p * PAGE;
      const hasData = (w.bitmap & (1 << p)) !== 0;
      const r = rangeOf(addr);
      if (r && hasData) {
        if (runStart < 0) {
          runStart = addr;
          runFirst = k;
        }
      } else {
        flush();
        // A dirty page of a private file mapping that was all zeros: not the file's bytes.
        if (r?.file && w.present & (1 << p)) writeMem(task.memFd, addr, ZERO_PAGE);
      }
      if (hasData) k++;
    }
    flush();
  }
  return bytes;
}

/** Writes the dumped private pages of `task` that must be present before it runs; returns the bytes written. */
export async function writeContents(ctx: RestoreContext, task: ProcTask): Promise<number> {
  const spans = spansOf(writeRanges(task, ctx.options.eager, ctx.lazyHuge));
  let bytes = 0;
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < spans.length) {
      const n = await writeSpan(ctx, task, spans[next++]!);
      bytes += n; // not `bytes += await ...`: that reads `bytes` before the other workers add to it
    }
  };
  await Promise.all(Array.from({ length: Math.min(READ_CONCURRENCY, spans.length) }, worker));
  return bytes;
}
