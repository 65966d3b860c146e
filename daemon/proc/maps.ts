/**
 * /proc/<pid>/maps: the VMAs of a process (proc(5), Documentation/filesystems/proc.rst).
 *
 * Line format (fs/proc/task_mmu.c):
 *   start-end perms offset major:minor inode [padding name]
 * with hex start/end/offset/major/minor, perms "rwxp" or "rwxs" (s = VM_MAYSHARE),
 * decimal inode, and a name that is a path (may contain spaces; a newline in a
 * path is printed as "\012"; an unlinked file gets " (deleted)") or a
 * bracketed kernel name ([heap], [stack], [vdso], [anon:x], ...), or nothing
 * for plain anonymous memory.
 */
import { assertAlive, fail, procPath, readProcText, type Origin } from './read.js';

export type VmaKind =
  'anon' | 'file' | 'heap' | 'stack' | 'vdso' | 'vvar' | 'vvar_vclock' | 'vsyscall' | 'shmem' | 'memfd' | 'other';

export interface Vma {
  start: number;
  end: number;
  read: boolean;
  write: boolean;
  exec: boolean;
  /** 's' in the perms column: VM_MAYSHARE (MAP_SHARED); false for 'p' (private). */
  shared: boolean;
  /** Offset into the file in bytes (0 for memory without a file). */
  offset: number;
  major: number;
  minor: number;
  inode: number;
  /** The name column without a trailing " (deleted)": a path, a bracketed kernel name, or '' for anonymous memory. */
  path: string;
  /** The name ended in " (deleted)": the mapped file has been unlinked. */
  deleted: boolean;
  kind: VmaKind;
  /** For [anon:<name>] and [anon_shmem:<name>] (prctl PR_SET_VMA_ANON_NAME): the name, else null. */
  anonName: string | null;
}

const DELETED = ' (deleted)';
const SPECIAL: Record<string, VmaKind> = {
  '[heap]': 'heap',
  '[stack]': 'stack',
  '[vdso]': 'vdso',
  '[vvar]': 'vvar',
  '[vvar_vclock]': 'vvar_vclock',
  '[vsyscall]': 'vsyscall',
};

/**
 * Reads s[from, to) as a lowercase hex number; NaN when empty or not hex.
 * Scanned by hand: maps and smaps are parsed line by line for every VMA of a
 * process, and this is several times faster than a regular expression.
 */
function hexAt(s: string, from: number, to: number): number {
  if (from < 0 || to <= from) return NaN;
  let v = 0;
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    const d = c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : -1;
    if (d < 0) return NaN;
    v = v * 16 + d;
  }
  // More than 13 digits may exceed 52 bits: keep only values that are exact.
  if (to - from > 13 && BigInt(v) !== BigInt(`0x${s.slice(from, to)}`)) return NaN;
  return v;
}

/** Reads s[from, to) as a decimal number; NaN when empty, not decimal or beyond 2^53. */
export function decAt(s: string, from: number, to: number): number {
  if (from < 0 || to <= from) return NaN;
  let v = 0;
  for (let i = from; i < to; i++) {
    const d = s.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return NaN;
    v = v * 10 + d;
  }
  return Number.isSafeInteger(v) ? v : NaN;
}

function field(v: number, o: Origin, what: string): number {
  if (Number.isNaN(v)) fail(o, `${what} is not a number (or is not exact as one)`);
  return v;
}

/** The header line of one VMA, as found in both maps and smaps. */
export function parseVmaLine(o: Origin): Vma {
  const s = o.text;
  const dash = s.indexOf('-');
  const sp1 = s.indexOf(' ', dash);
  const start = field(hexAt(s, 0, dash), o, 'start');
  const end = field(hexAt(s, dash + 1, sp1), o, 'end');
  if (start >= end || start % 4096 !== 0 || end % 4096 !== 0) fail(o, 'start/end are not an ordered page range');
  const [r, w, x, ps] = [s.charAt(sp1 + 1), s.charAt(sp1 + 2), s.charAt(sp1 + 3), s.charAt(sp1 + 4)];
  const permsOk = (r === 'r' || r === '-') && (w === 'w' || w === '-') && (x === 'x' || x === '-');
  if (!permsOk || (ps !== 'p' && ps !== 's') || s.charAt(sp1 + 5) !== ' ') fail(o, 'perms are not "rwx[ps]"');
  const offEnd = s.indexOf(' ', sp1 + 6);
  const colon = s.indexOf(':', offEnd);
  const devEnd = s.indexOf(' ', colon);
  let inoEnd = s.indexOf(' ', devEnd + 1);
  if (devEnd < 0) fail(o, 'no inode field');
  if (inoEnd < 0) inoEnd = s.length;
  // seq_file pads the name column with spaces; a path never starts with one.
  let nameStart = inoEnd;
  while (s.charCodeAt(nameStart) === 32) nameStart++;
  // Only '\n' is escaped (as "\012"), so a path that really contains the four
  // characters "\012" cannot be told apart; such paths are read as a newline.
  let name = s.slice(nameStart);
  if (name.includes('\\012')) name = name.replaceAll('\\012', '\n');
  const deleted = name.endsWith(DELETED);
  if (deleted) name = name.slice(0, -DELETED.length);
  const vma: Vma = {
    start,
    end,
    read: r === 'r',
    write: w === 'w',
    exec: x === 'x',
    shared: ps === 's',
    offset: field(hexAt(s, sp1 + 6, offEnd), o, 'offset'),
    major: field(hexAt(s, offEnd + 1, colon), o, 'major'),
    minor: field(hexAt(s, colon + 1, devEnd), o, 'minor'),
    inode: field(decAt(s, devEnd + 1, inoEnd), o, 'inode'),
    path: name,
    deleted,
    kind: 'other',
    anonName: null,
  };
  classify(vma, o);
  return vma;
}

function classify(vma: Vma, o: Origin): void {
  const name = vma.path;
  if (name === '') {
    if (vma.inode !== 0) fail(o, 'an inode without a name');
    vma.kind = 'anon';
  } else if (name.startsWith('[')) {
    if (!name.endsWith(']')) fail(o, 'unterminated bracketed name');
    vma.kind = SPECIAL[name] ?? 'other';
    const anon = /^\[anon(_shmem)?:(.*)\]$/s.exec(name);
    if (anon) {
      vma.anonName = anon[2]!;
      // A named MAP_SHARED|MAP_ANONYMOUS region is still shared anonymous memory.
      if (anon[1]) vma.kind = 'shmem';
    }
  } else if (name.startsWith('/')) {
    // MAP_SHARED|MAP_ANONYMOUS memory is a shmem file named "dev/zero" on the
    // internal shm mount, unlinked from birth; SysV segments are "/SYSV<key>".
    if (vma.deleted && vma.shared && name === '/dev/zero') vma.kind = 'shmem';
    else if (vma.deleted && /^\/SYSV[0-9a-f]{8}$/.test(name)) vma.kind = 'shmem';
    else if (vma.deleted && name.startsWith('/memfd:')) vma.kind = 'memfd';
    else vma.kind = 'file';
  } else {
    // Files outside any path namespace, e.g. "anon_inode:[io_uring]" rings or a
    // packet socket's ring: mapped, but not a file that can be reopened by path.
    vma.kind = 'other';
  }
}

/** Calls `fn` with each line of `text` and its 1-based number (a final newline ends the last line). */
export function forEachLine(text: string, fn: (line: string, lineNo: number) => void): void {
  let pos = 0;
  for (let n = 1; pos < text.length; n++) {
    let nl = text.indexOf('\n', pos);
    if (nl < 0) nl = text.length;
    fn(text.slice(pos, nl), n);
    pos = nl + 1;
  }
}

/** Parses the text of a maps file. `file` names it in errors. */
export function parseMaps(text: string, file: string): Vma[] {
  const vmas: Vma[] = [];
  forEachLine(text, (line, n) => {
    const o = { file, line: n, text: line };
    const vma = parseVmaLine(o);
    const prev = vmas[vmas.length - 1];
    if (prev && vma.start < prev.end) fail(o, 'VMAs overlap or go backwards');
    vmas.push(vma);
  });
  return vmas;
}

/**
 * The VMAs of a process (or of one thread: the same address space). A kernel
 * thread has none. ESRCH when the process does not exist or exits meanwhile.
 */
export function readMaps(pid: number, tid?: number): Vma[] {
  const vmas = parseMaps(readProcText(pid, 'maps', tid), procPath(pid, 'maps', tid));
  assertAlive(pid, tid);
  return vmas;
}

/** The VMA that contains `addr`, or undefined. `vmas` must be sorted (as read). */
export function findVma<T extends Vma>(vmas: readonly T[], addr: number): T | undefined {
  let lo = 0;
  let hi = vmas.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const v = vmas[mid]!;
    if (addr < v.start) hi = mid - 1;
    else if (addr >= v.end) lo = mid + 1;
    else return v;
  }
  return undefined;
}
