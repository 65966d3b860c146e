/**
 * The smaller per-process files of /proc (proc(5)): auxv, cwd/root/exe,
 * cmdline, comm, personality, limits, ns/*, oom_score_adj, timerslack_ns and
 * loginuid.
 */
import { readdirSync } from 'node:fs';
import {
  assertAlive,
  decodeText,
  fail,
  parseDec,
  parseDecBig,
  parseHex,
  parseSignedDec,
  procPath,
  readProcBuffer,
  readProcLink,
  readProcText,
  splitLines,
  translateError,
  type Origin,
} from './read.js';

// ---------------------------------------------------------------------------
// auxv
// ---------------------------------------------------------------------------

/** getauxval(3) AT_* types (<linux/auxvec.h>, x86-64). */
export const AT = {
  AT_NULL: 0,
  AT_IGNORE: 1,
  AT_EXECFD: 2,
  AT_PHDR: 3,
  AT_PHENT: 4,
  AT_PHNUM: 5,
  AT_PAGESZ: 6,
  AT_BASE: 7,
  AT_FLAGS: 8,
  AT_ENTRY: 9,
  AT_NOTELF: 10,
  AT_UID: 11,
  AT_EUID: 12,
  AT_GID: 13,
  AT_EGID: 14,
  AT_PLATFORM: 15,
  AT_HWCAP: 16,
  AT_CLKTCK: 17,
  AT_SECURE: 23,
  AT_BASE_PLATFORM: 24,
  AT_RANDOM: 25,
  AT_HWCAP2: 26,
  AT_RSEQ_FEATURE_SIZE: 27,
  AT_RSEQ_ALIGN: 28,
  AT_HWCAP3: 29,
  AT_HWCAP4: 30,
  AT_EXECFN: 31,
  AT_SYSINFO_EHDR: 33,
  AT_MINSIGSTKSZ: 51,
} as const;

export interface Auxv {
  /** The file exactly as read: pairs of native-endian u64, ending with AT_NULL. */
  raw: Buffer;
  /** The pairs before AT_NULL. */
  entries: Array<{ type: bigint; value: bigint }>;
}

export function parseAuxv(raw: Buffer, file: string): Auxv {
  const entries: Auxv['entries'] = [];
  if (raw.length === 0) return { raw, entries }; // a kernel thread has no auxv
  if (raw.length % 16 !== 0) fail({ file, line: 0, text: '' }, `length ${raw.length} is not a multiple of 16`);
  for (let off = 0; off < raw.length; off += 16) {
    const type = raw.readBigUInt64LE(off);
    const value = raw.readBigUInt64LE(off + 8);
    if (type === 0n) {
      if (off + 16 !== raw.length) fail({ file, line: 0, text: '' }, `AT_NULL at byte ${off} before the end`);
      return { raw, entries };
    }
    entries.push({ type, value });
  }
  fail({ file, line: 0, text: '' }, 'no AT_NULL terminator');
}

export function readAuxv(pid: number): Auxv {
  let raw: Buffer;
  try {
    raw = readProcBuffer(pid, 'auxv');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOMM') throw e;
    raw = Buffer.alloc(0); // a kernel thread has no auxv
  }
  const auxv = parseAuxv(raw, procPath(pid, 'auxv'));
  assertAlive(pid);
  return auxv;
}

/** The value of an AT_* entry, or undefined. */
export function auxvValue(auxv: Auxv, type: number): bigint | undefined {
  return auxv.entries.find((e) => e.type === BigInt(type))?.value;
}

// ---------------------------------------------------------------------------
// links, cmdline, comm, personality
// ---------------------------------------------------------------------------

export interface ProcLinks {
  /** readlink targets as the kernel gives them (an unlinked target ends in " (deleted)"). */
  cwd: string;
  root: string;
  /** null for a kernel thread (no executable). */
  exe: string | null;
}

export function readLinks(pid: number): ProcLinks {
  let exe: string | null;
  try {
    exe = readProcLink(pid, 'exe');
  } catch (e) {
    // A live kernel thread has no exe link (ENOENT); a gone process is ESRCH.
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    assertAlive(pid);
    exe = null;
  }
  return { cwd: readProcLink(pid, 'cwd'), root: readProcLink(pid, 'root'), exe };
}

export interface Cmdline {
  /** Exactly as read (the argument area, NUL separated). */
  raw: Buffer;
  /** Arguments decoded as UTF-8; null when some are not valid UTF-8 (use raw). */
  args: string[] | null;
}

export function readCmdline(pid: number): Cmdline {
  const raw = readProcBuffer(pid, 'cmdline');
  const body = raw.length > 0 && raw[raw.length - 1] === 0 ? raw.subarray(0, -1) : raw;
  let args: string[] | null;
  try {
    args = body.length === 0 ? [] : decodeText(body, procPath(pid, 'cmdline')).split('\0');
  } catch {
    args = null;
  }
  return { raw, args };
}

/** The command name (comm) of a process or thread: raw bytes, up to 15, no escaping. */
export function readComm(pid: number, tid?: number): string {
  const text = readProcText(pid, 'comm', tid);
  if (!text.endsWith('\n')) fail({ file: procPath(pid, 'comm', tid), line: 1, text }, 'no final newline');
  return text.slice(0, -1);
}

/** personality(2) persona, printed in hex. */
export function readPersonality(pid: number): number {
  const file = procPath(pid, 'personality');
  const text = readProcText(pid, 'personality').trim();
  return parseHex(text, { file, line: 1, text }, 'personality');
}

// ---------------------------------------------------------------------------
// limits
// ---------------------------------------------------------------------------

/** RLIM_INFINITY: "unlimited". */
export const RLIM_INFINITY = (1n << 64n) - 1n;

/** RLIMIT_* in kernel order (the index is the resource number), with the row label and unit of /proc/<pid>/limits. */
export const RLIMITS = [
  ['RLIMIT_CPU', 'Max cpu time', 'seconds'],
  ['RLIMIT_FSIZE', 'Max file size', 'bytes'],
  ['RLIMIT_DATA', 'Max data size', 'bytes'],
  ['RLIMIT_STACK', 'Max stack size', 'bytes'],
  ['RLIMIT_CORE', 'Max core file size', 'bytes'],
  ['RLIMIT_RSS', 'Max resident set', 'bytes'],
  ['RLIMIT_NPROC', 'Max processes', 'processes'],
  ['RLIMIT_NOFILE', 'Max open files', 'files'],
  ['RLIMIT_MEMLOCK', 'Max locked memory', 'bytes'],
  ['RLIMIT_AS', 'Max address space', 'bytes'],
  ['RLIMIT_LOCKS', 'Max file locks', 'locks'],
  ['RLIMIT_SIGPENDING', 'Max pending signals', 'signals'],
  ['RLIMIT_MSGQUEUE', 'Max msgqueue size', 'bytes'],
  ['RLIMIT_NICE', 'Max nice priority', ''],
  ['RLIMIT_RTPRIO', 'Max realtime priority', ''],
  ['RLIMIT_RTTIME', 'Max realtime timeout', 'us'],
] as const;
export type RlimitName = (typeof RLIMITS)[number][0];

export interface Rlimit {
  resource: number;
  soft: bigint;
  hard: bigint;
}

/** Limits keyed by RLIMIT_* name; Object.values() gives kernel order. */
export type Rlimits = Record<RlimitName, Rlimit>;

function parseLimit(s: string, o: Origin, what: string): bigint {
  return s === 'unlimited' ? RLIM_INFINITY : parseDecBig(s, o, what);
}

export function parseLimits(text: string, file: string): Rlimits {
  const lines = splitLines(text);
  const header = { file, line: 1, text: lines[0] ?? '' };
  if (!/^Limit\s+Soft Limit\s+Hard Limit\s+Units\s*$/.test(header.text)) fail(header, 'unexpected header');
  if (lines.length !== RLIMITS.length + 1)
    fail({ file, line: 0, text: '' }, `${lines.length - 1} limits, expected ${RLIMITS.length}`);
  const out: Partial<Rlimits> = {};
  RLIMITS.forEach(([name, label, unit], resource) => {
    const o = { file, line: resource + 2, text: lines[resource + 1]! };
    // Rows are "%-25s %-20s %-20s %-10s": the label is a fixed-width column.
    if (o.text.slice(0, 26).trimEnd() !== label) fail(o, `expected the "${label}" row`);
    const cols = o.text.slice(26).trim().split(/\s+/);
    const expected = unit === '' ? 2 : 3;
    if (cols.length !== expected || (unit !== '' && cols[2] !== unit))
      fail(o, `expected soft, hard${unit ? ` and ${unit}` : ''}`);
    out[name] = { resource, soft: parseLimit(cols[0]!, o, 'soft limit'), hard: parseLimit(cols[1]!, o, 'hard limit') };
  });
  return out as Rlimits;
}

export function readLimits(pid: number): Rlimits {
  return parseLimits(readProcText(pid, 'limits'), procPath(pid, 'limits'));
}

// ---------------------------------------------------------------------------
// namespaces
// ---------------------------------------------------------------------------

/** Namespace inode numbers by /proc/<pid>/ns entry name (cgroup, ipc, mnt, net, pid, pid_for_children, ...). */
export type Namespaces = Record<string, number>;

export function readNamespaces(pid: number): Namespaces {
  let names: string[];
  try {
    names = readdirSync(procPath(pid, 'ns')).sort();
  } catch (e) {
    throw translateError(e, pid);
  }
  const out: Namespaces = {};
  for (const name of names) {
    const text = readProcLink(pid, `ns/${name}`);
    const m = /^([a-z_]+):\[(\d+)\]$/.exec(text);
    if (!m) fail({ file: procPath(pid, `ns/${name}`), line: 0, text }, 'not "<type>:[<inode>]"');
    out[name] = parseDec(m[2]!, { file: procPath(pid, `ns/${name}`), line: 0, text }, 'namespace inode');
  }
  return out;
}

/**
 * The namespaces (by /proc/<pid>/ns name) in which `pid` differs from `other`
 * ('self' = the calling process, or a pid such as 1); empty when all are the
 * same. A namespace listed for only one of them counts as different.
 */
export function sameNamespacesAs(pid: number, other: 'self' | number): string[] {
  const mine = readNamespaces(pid);
  const theirs = readNamespaces(other === 'self' ? process.pid : other);
  const names = new Set([...Object.keys(mine), ...Object.keys(theirs)]);
  return [...names].filter((n) => mine[n] !== theirs[n]).sort();
}

// ---------------------------------------------------------------------------
// single numbers
// ---------------------------------------------------------------------------

function readNumberFile(pid: number, rel: string, signed: boolean): number {
  const file = procPath(pid, rel);
  const text = readProcText(pid, rel).trim();
  const o = { file, line: 1, text };
  return signed ? parseSignedDec(text, o, rel) : parseDec(text, o, rel);
}

/** -1000..1000. */
export function readOomScoreAdj(pid: number): number {
  return readNumberFile(pid, 'oom_score_adj', true);
}

/** prctl(PR_SET_TIMERSLACK) value in nanoseconds. */
export function readTimerslackNs(pid: number): number {
  return readNumberFile(pid, 'timerslack_ns', false);
}

/** The audit login uid; 4294967295 (AUDIT_UID_UNSET) when never set. */
export const AUDIT_UID_UNSET = 4294967295;

export function readLoginuid(pid: number): number {
  return readNumberFile(pid, 'loginuid', false);
}
