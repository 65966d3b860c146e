/**
 * /proc/<pid>/smaps: every VMA of maps plus its memory accounting and its
 * VmFlags (proc(5), Documentation/filesystems/proc.rst, fs/proc/task_mmu.c
 * show_smap() and show_smap_vma_flags()).
 *
 * Each VMA is its maps header line followed by "Key: value" lines. Every key
 * and every VmFlags mnemonic must be known: an unknown one is an error, since a
 * dump that ignores a VMA property it does not understand could restore the
 * memory wrongly. The tables below are those of Linux 6.18 on x86-64 (plus
 * mnemonics of older kernels and other architectures, which cost nothing).
 */
import { decAt, forEachLine, parseVmaLine, type Vma } from './maps.js';
import { assertAlive, fail, parseDec, procPath, readProcText, type Origin } from './read.js';

/** The size fields of a VMA, in bytes (the kernel prints them in kB). */
export const SMAPS_SIZE_FIELDS = [
  'Size',
  'KernelPageSize',
  'MMUPageSize',
  'Rss',
  'Pss',
  'Pss_Dirty',
  'Shared_Clean',
  'Shared_Dirty',
  'Private_Clean',
  'Private_Dirty',
  'Referenced',
  'Anonymous',
  'KSM',
  'LazyFree',
  'AnonHugePages',
  'ShmemPmdMapped',
  'FilePmdMapped',
  'Shared_Hugetlb',
  'Private_Hugetlb',
  'Swap',
  'SwapPss',
  'Locked',
] as const;
export type SmapsSizeField = (typeof SMAPS_SIZE_FIELDS)[number];

/**
 * The two-letter VmFlags mnemonics and what each means for a dump. Flags the
 * dump must reproduce on restore are marked "restore"; "refuse" marks state a
 * dump cannot capture faithfully and must reject (the dump decides; this table
 * documents why).
 */
export const VM_FLAGS = {
  rd: 'VM_READ: readable',
  wr: 'VM_WRITE: writable',
  ex: 'VM_EXEC: executable',
  sh: 'VM_SHARED: MAP_SHARED whose writes reach the object (absent for a read-only file)',
  mr: 'VM_MAYREAD: may become readable (mprotect limit)',
  mw: 'VM_MAYWRITE: may become writable (mprotect limit; off for a read-only fd mapped MAP_SHARED)',
  me: 'VM_MAYEXEC: may become executable (off on noexec mounts)',
  ms: 'VM_MAYSHARE: MAP_SHARED (the "s" in maps)',
  gd: 'VM_GROWSDOWN: stack segment that grows down (restore: MAP_GROWSDOWN)',
  pf: 'VM_PFNMAP: pure PFN range, no struct pages (device memory; refuse unless vvar-like)',
  dw: 'VM_DENYWRITE: write to the mapped file denied (removed in Linux 5.15)',
  lo: 'VM_LOCKED: mlock()ed (restore: mlock)',
  io: 'VM_IO: memory-mapped I/O (device; refuse unless vvar-like)',
  sr: 'VM_SEQ_READ: MADV_SEQUENTIAL (restore: madvise)',
  rr: 'VM_RAND_READ: MADV_RANDOM (restore: madvise)',
  dc: 'VM_DONTCOPY: MADV_DONTFORK (restore: madvise)',
  de: 'VM_DONTEXPAND: mremap may not grow it (special mappings)',
  lf: 'VM_LOCKONFAULT: mlock2(MLOCK_ONFAULT) (restore: mlock2)',
  ac: 'VM_ACCOUNT: charged to the overcommit accounting',
  nr: 'VM_NORESERVE: MAP_NORESERVE (restore: mmap flag)',
  ht: 'VM_HUGETLB: hugetlbfs pages',
  sf: 'VM_SYNC: MAP_SYNC (DAX synchronous page faults)',
  nl: 'VM_NONLINEAR: remap_file_pages() (removed in Linux 4.0)',
  ar: 'VM_ARCH_1: architecture flag (x86: VM_PAT, a PAT-reserved PFN range)',
  wf: 'VM_WIPEONFORK: MADV_WIPEONFORK (restore: madvise)',
  dd: 'VM_DONTDUMP: MADV_DONTDUMP (restore: madvise)',
  bt: 'VM_ARM64_BTI: arm64 branch target identification',
  sd: 'VM_SOFTDIRTY: soft-dirty tracking state (CONFIG_MEM_SOFT_DIRTY)',
  mm: 'VM_MIXEDMAP: mixed struct-page and PFN mapping (drivers)',
  hg: 'VM_HUGEPAGE: MADV_HUGEPAGE (restore: madvise)',
  nh: 'VM_NOHUGEPAGE: MADV_NOHUGEPAGE (restore: madvise)',
  mg: 'VM_MERGEABLE: MADV_MERGEABLE, KSM (restore: madvise)',
  mt: 'VM_MTE: arm64 memory tagging enabled',
  um: 'VM_UFFD_MISSING: registered with a userfaultfd in missing mode',
  uw: 'VM_UFFD_WP: registered with a userfaultfd in write-protect mode',
  ui: 'VM_UFFD_MINOR: registered with a userfaultfd in minor mode',
  ss: 'VM_SHADOW_STACK: x86 shadow stack / arm64 guarded control stack (refuse)',
  dp: 'VM_DROPPABLE: MAP_DROPPABLE, contents may be dropped under pressure (vgetrandom state)',
  sl: 'VM_SEALED: mseal()ed (restore: mseal after placing it)',
  mp: 'VM_MPX: Intel MPX bounds table (removed in Linux 5.6)',
} as const;
export type VmFlag = keyof typeof VM_FLAGS;

export interface SmapsVma extends Vma {
  sizes: Record<SmapsSizeField, number>;
  /** THPeligible: the VMA may be backed by transparent huge pages. */
  thpEligible: boolean;
  /** ProtectionKey (only printed when the CPU and kernel use pkeys), else null. */
  protectionKey: number | null;
  vmFlags: Set<VmFlag>;
}

interface Pending {
  vma: Vma;
  /** Bytes per SMAPS_SIZE_FIELDS index; -1 until its line is seen. */
  sizes: number[];
  thpEligible: boolean | null;
  protectionKey: number | null;
  vmFlags: Set<VmFlag> | null;
  origin: Origin;
}

const SIZE_INDEX = new Map<string, number>(SMAPS_SIZE_FIELDS.map((f, i) => [f, i]));

function parseFlags(value: string, o: Origin): Set<VmFlag> {
  const flags = new Set<VmFlag>();
  for (const f of value.split(' ')) {
    if (f === '') continue;
    if (f === '??') fail(o, 'the kernel set a VMA flag that has no mnemonic');
    if (!Object.hasOwn(VM_FLAGS, f)) fail(o, `unknown VmFlags mnemonic "${f}"`);
    flags.add(f as VmFlag);
  }
  return flags;
}

/** "Key:   <n> kB" from just after the colon: the size in bytes. */
function parseKb(s: string, from: number, o: Origin, key: string): number {
  let i = from;
  while (s.charCodeAt(i) === 32) i++;
  const sp = s.indexOf(' ', i);
  if (sp < 0 || s.length !== sp + 3 || !s.endsWith(' kB')) fail(o, `${key} is not "<n> kB"`);
  const v = decAt(s, i, sp);
  if (Number.isNaN(v)) fail(o, `${key} is not "<n> kB"`);
  return v * 1024;
}

function applyField(p: Pending, o: Origin): void {
  const s = o.text;
  const colon = s.indexOf(':');
  if (colon <= 0) fail(o, 'neither a VMA line nor a "Key: value" line');
  const key = s.slice(0, colon);
  const idx = SIZE_INDEX.get(key);
  if (idx !== undefined) {
    if (p.sizes[idx] !== -1) fail(o, `${key} appears twice`);
    p.sizes[idx] = parseKb(s, colon + 1, o, key);
    return;
  }
  const value = s.slice(colon + 1).trim();
  if (key === 'THPeligible') {
    if (value !== '0' && value !== '1') fail(o, 'THPeligible is not 0 or 1');
    p.thpEligible = value === '1';
  } else if (key === 'ProtectionKey') {
    p.protectionKey = parseDec(value, o, key);
  } else if (key === 'VmFlags') {
    p.vmFlags = parseFlags(value, o);
  } else {
    fail(o, `unknown smaps field "${key}"`);
  }
}

/** The sizes as a record, written as one literal so every record has the same shape (fast property access). */
function sizesRecord(a: number[]): Record<SmapsSizeField, number> {
  return {
    Size: a[0]!,
    KernelPageSize: a[1]!,
    MMUPageSize: a[2]!,
    Rss: a[3]!,
    Pss: a[4]!,
    Pss_Dirty: a[5]!,
    Shared_Clean: a[6]!,
    Shared_Dirty: a[7]!,
    Private_Clean: a[8]!,
    Private_Dirty: a[9]!,
    Referenced: a[10]!,
    Anonymous: a[11]!,
    KSM: a[12]!,
    LazyFree: a[13]!,
    AnonHugePages: a[14]!,
    ShmemPmdMapped: a[15]!,
    FilePmdMapped: a[16]!,
    Shared_Hugetlb: a[17]!,
    Private_Hugetlb: a[18]!,
    Swap: a[19]!,
    SwapPss: a[20]!,
    Locked: a[21]!,
  };
}

function finish(p: Pending): SmapsVma {
  const missing = p.sizes.indexOf(-1);
  if (missing >= 0) fail(p.origin, `VMA has no ${SMAPS_SIZE_FIELDS[missing]} line`);
  if (p.thpEligible === null) fail(p.origin, 'VMA has no THPeligible line');
  if (p.vmFlags === null) fail(p.origin, 'VMA has no VmFlags line');
  const v = p.vma;
  if (p.sizes[0] !== v.end - v.start) fail(p.origin, 'Size does not match the address range');
  return {
    start: v.start,
    end: v.end,
    read: v.read,
    write: v.write,
    exec: v.exec,
    shared: v.shared,
    offset: v.offset,
    major: v.major,
    minor: v.minor,
    inode: v.inode,
    path: v.path,
    deleted: v.deleted,
    kind: v.kind,
    anonName: v.anonName,
    sizes: sizesRecord(p.sizes),
    thpEligible: p.thpEligible,
    protectionKey: p.protectionKey,
    vmFlags: p.vmFlags,
  };
}

/** A VMA header starts with its hex start address; field names start with an uppercase letter. */
function isHeader(line: string): boolean {
  const c = line.charCodeAt(0);
  return (c >= 48 && c <= 57) || (c >= 97 && c <= 102);
}

export function parseSmaps(text: string, file: string): SmapsVma[] {
  const out: SmapsVma[] = [];
  let cur: Pending | null = null;
  forEachLine(text, (line, n) => {
    const o: Origin = { file, line: n, text: line };
    if (isHeader(line)) {
      if (cur) out.push(finish(cur));
      const vma = parseVmaLine(o);
      const prev = out[out.length - 1];
      if (prev && vma.start < prev.end) fail(o, 'VMAs overlap or go backwards');
      const sizes = new Array<number>(SMAPS_SIZE_FIELDS.length).fill(-1);
      cur = { vma, sizes, thpEligible: null, protectionKey: null, vmFlags: null, origin: o };
      return;
    }
    if (!cur) fail(o, 'field before the first VMA line');
    applyField(cur, o);
  });
  if (cur) out.push(finish(cur));
  return out;
}

/** The VMAs of a process with sizes and flags. ESRCH when it does not exist or exits meanwhile. */
export function readSmaps(pid: number, tid?: number): SmapsVma[] {
  const vmas = parseSmaps(readProcText(pid, 'smaps', tid), procPath(pid, 'smaps', tid));
  assertAlive(pid, tid);
  return vmas;
}
