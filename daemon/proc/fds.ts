/**
 * The file descriptors of a process (proc(5)): /proc/<pid>/fd/<n> is a magic
 * link (readlink gives a path or "type:[inode]", stat follows it to the open
 * file itself) and /proc/<pid>/fdinfo/<n> has the position, the open flags
 * (octal, with O_CLOEXEC folded in from the close-on-exec bit), the mount id,
 * the inode and type-specific lines (eventfd counter, epoll targets, signalfd
 * mask, inotify watches, ...), kept raw.
 */
import { readdirSync, statSync, type BigIntStats } from 'node:fs';
import {
  assertAlive,
  fail,
  parseDec,
  parseOct,
  procPath,
  readProcLink,
  readProcText,
  splitLines,
  translateError,
  type Origin,
} from './read.js';

/** open(2) flag bits (x86-64 <asm-generic/fcntl.h>). */
export const O_FLAGS = {
  O_ACCMODE: 0o3,
  O_CREAT: 0o100,
  O_EXCL: 0o200,
  O_NOCTTY: 0o400,
  O_TRUNC: 0o1000,
  O_APPEND: 0o2000,
  O_NONBLOCK: 0o4000,
  O_DSYNC: 0o10000,
  O_ASYNC: 0o20000,
  O_DIRECT: 0o40000,
  O_LARGEFILE: 0o100000,
  O_DIRECTORY: 0o200000,
  O_NOFOLLOW: 0o400000,
  O_NOATIME: 0o1000000,
  O_CLOEXEC: 0o2000000,
  O_PATH: 0o10000000,
} as const;

export type FdKind =
  'file' | 'directory' | 'pipe' | 'fifo' | 'chardev' | 'blockdev' | 'socket' | 'anon_inode' | 'memfd' | 'other';

export interface FdStat {
  dev: number;
  ino: number;
  /** st_mode: file type and permission bits. */
  mode: number;
  size: number;
  nlink: number;
  /** Device number of a character or block device (0 otherwise). */
  rdev: number;
}

export interface FdInfo {
  pos: number;
  /** Open flags as a number (fdinfo prints them in octal), O_CLOEXEC included. */
  flags: number;
  mntId: number;
  ino: number;
  /** Type-specific lines (eventfd-count, tfd, sigmask, inotify wd, ...), as printed. */
  extra: string[];
}

interface FdCommon {
  fd: number;
  /** readlink of /proc/<pid>/fd/<n>, as the kernel gives it. */
  target: string;
  stat: FdStat;
  info: FdInfo;
  /** O_ACCMODE: read, write, both, or 3 ("ioctl only", see open(2)). */
  accessMode: 'r' | 'w' | 'rw' | 'ioctl';
  append: boolean;
  cloexec: boolean;
  nonblock: boolean;
  /** An O_PATH descriptor: a location, not an open file. */
  oPath: boolean;
}

/** What the classification adds, by kind. */
export type FdKindFields =
  | { kind: 'file' | 'directory' | 'fifo'; path: string; deleted: boolean }
  | { kind: 'chardev' | 'blockdev'; path: string; deleted: boolean; major: number; minor: number }
  | { kind: 'pipe' | 'socket'; inode: number }
  | { kind: 'anon_inode'; anonKind: string }
  | { kind: 'memfd'; name: string }
  | { kind: 'other' };

export type FdDescription = FdCommon & FdKindFields;

const S_IFMT = 0o170000;
const S_IFSOCK = 0o140000;
const S_IFLNK = 0o120000;
const S_IFREG = 0o100000;
const S_IFBLK = 0o60000;
const S_IFDIR = 0o40000;
const S_IFCHR = 0o20000;
const S_IFIFO = 0o10000;
const DELETED = ' (deleted)';

/** Major and minor numbers of a dev_t (glibc's gnu_dev_major/minor encoding). */
export function devMajorMinor(dev: number | bigint): { major: number; minor: number } {
  const d = BigInt(dev);
  return {
    major: Number(((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn)),
    minor: Number((d & 0xffn) | ((d >> 12n) & ~0xffn)),
  };
}

function safeNumber(v: bigint, what: string, fd: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`${fd}: ${what} ${v} is beyond 2^53 (unsupported)`);
  return Number(v);
}

function toFdStat(s: BigIntStats, path: string): FdStat {
  return {
    dev: safeNumber(s.dev, 'st_dev', path),
    ino: safeNumber(s.ino, 'st_ino', path),
    mode: Number(s.mode),
    size: safeNumber(s.size, 'st_size', path),
    nlink: safeNumber(s.nlink, 'st_nlink', path),
    rdev: safeNumber(s.rdev, 'st_rdev', path),
  };
}

export function parseFdInfo(text: string, file: string): FdInfo {
  const known = new Map<string, Origin & { value: string }>();
  const extra: string[] = [];
  const lines = splitLines(text);
  for (let i = 0; i < lines.length; i++) {
    const m = /^(pos|flags|mnt_id|ino):\t(.*)$/.exec(lines[i]!);
    if (!m) {
      extra.push(lines[i]!);
      continue;
    }
    const o = { file, line: i + 1, text: lines[i]!, value: m[2]! };
    if (known.has(m[1]!)) fail(o, `${m[1]} appears twice`);
    known.set(m[1]!, o);
  }
  const get = (key: string): Origin & { value: string } => {
    const o = known.get(key);
    if (!o) fail({ file, line: 0, text: '' }, `no ${key} line`);
    return o;
  };
  const pos = get('pos');
  const flags = get('flags');
  const mnt = get('mnt_id');
  const ino = get('ino');
  return {
    pos: parseDec(pos.value, pos, 'pos'),
    flags: parseOct(flags.value, flags, 'flags'),
    mntId: parseDec(mnt.value, mnt, 'mnt_id'),
    ino: parseDec(ino.value, ino, 'ino'),
    extra,
  };
}

/** Open fd numbers of a process, ascending. */
export function listFds(pid: number): number[] {
  let names: string[];
  try {
    names = readdirSync(procPath(pid, 'fd'));
  } catch (e) {
    throw translateError(e, pid);
  }
  const fds = names.map((n) => {
    if (!/^\d+$/.test(n)) fail({ file: procPath(pid, 'fd'), line: 0, text: n }, 'not an fd number');
    return Number(n);
  });
  return fds.sort((a, b) => a - b);
}

/**
 * A path ending in " (deleted)" names an unlinked file, unless a live file
 * really has that name. A file with no links left is deleted; otherwise look
 * the literal name up in the process's root and compare identities.
 */
function resolveDeleted(pid: number, target: string, st: FdStat): { path: string; deleted: boolean } {
  if (!target.endsWith(DELETED)) return { path: target, deleted: false };
  const stripped = target.slice(0, -DELETED.length);
  if (st.nlink === 0) return { path: stripped, deleted: true };
  try {
    const s = statSync(`/proc/${pid}/root${target}`, { bigint: true });
    if (Number(s.ino) === st.ino && Number(s.dev) === st.dev) return { path: target, deleted: false };
  } catch {
    // No such name: the name was unlinked while other hard links remain.
  }
  return { path: stripped, deleted: true };
}

function classifyPath(pid: number, target: string, st: FdStat): FdKindFields {
  const { path, deleted } = resolveDeleted(pid, target, st);
  switch (st.mode & S_IFMT) {
    case S_IFREG:
      // memfd_create(2) files live on an internal tmpfs/hugetlbfs mount, named
      // "memfd:<name>" and unlinked from birth.
      if (deleted && path.startsWith('/memfd:')) return { kind: 'memfd', name: path.slice('/memfd:'.length) };
      return { kind: 'file', path, deleted };
    case S_IFDIR:
      return { kind: 'directory', path, deleted };
    case S_IFIFO:
      return { kind: 'fifo', path, deleted };
    case S_IFCHR:
      return { kind: 'chardev', path, deleted, ...devMajorMinor(st.rdev) };
    case S_IFBLK:
      return { kind: 'blockdev', path, deleted, ...devMajorMinor(st.rdev) };
    case S_IFSOCK:
    case S_IFLNK:
      return { kind: 'other' }; // O_PATH descriptors of a socket file or a symlink
    default:
      throw new Error(`${procPath(pid, 'fd')}: unknown file type 0o${(st.mode & S_IFMT).toString(8)} for ${target}`);
  }
}

function classify(pid: number, fdPath: string, target: string, st: FdStat): FdKindFields {
  const typed = /^(pipe|socket):\[(\d+)\]$/.exec(target);
  if (typed) {
    const inode = Number(typed[2]);
    const expect = typed[1] === 'pipe' ? S_IFIFO : S_IFSOCK;
    if (inode !== st.ino || (st.mode & S_IFMT) !== expect) {
      throw new Error(`${fdPath}: ${target} does not match its stat (ino ${st.ino}, mode 0o${st.mode.toString(8)})`);
    }
    return { kind: typed[1] as 'pipe' | 'socket', inode };
  }
  if (target.startsWith('anon_inode:')) {
    const name = target.slice('anon_inode:'.length);
    return { kind: 'anon_inode', anonKind: name.replace(/^\[(.*)\]$/, '$1') };
  }
  if (target.startsWith('/')) return classifyPath(pid, target, st);
  return { kind: 'other' }; // e.g. a namespace fd (nsfs: "net:[4026531840]")
}

function accessModeOf(flags: number): FdCommon['accessMode'] {
  return (['r', 'w', 'rw', 'ioctl'] as const)[flags & O_FLAGS.O_ACCMODE]!;
}

/**
 * One fd of a process. ENOENT (from fs) when the fd is not open, EFDCHANGED
 * when it was closed and reused while being read, ESRCH when the process is gone.
 */
export function readFd(pid: number, fd: number): FdDescription {
  const fdPath = procPath(pid, `fd/${fd}`);
  const target = readProcLink(pid, `fd/${fd}`);
  let st: FdStat;
  try {
    st = toFdStat(statSync(fdPath, { bigint: true }), fdPath);
  } catch (e) {
    throw translateError(e, pid);
  }
  const info = parseFdInfo(readProcText(pid, `fdinfo/${fd}`), procPath(pid, `fdinfo/${fd}`));
  if (info.ino !== st.ino) {
    const e = new Error(`${fdPath}: fd changed while being read (fdinfo ino ${info.ino}, stat ${st.ino})`);
    throw Object.assign(e, { code: 'EFDCHANGED' });
  }
  const common: FdCommon = {
    fd,
    target,
    stat: st,
    info,
    accessMode: accessModeOf(info.flags),
    append: (info.flags & O_FLAGS.O_APPEND) !== 0,
    cloexec: (info.flags & O_FLAGS.O_CLOEXEC) !== 0,
    nonblock: (info.flags & O_FLAGS.O_NONBLOCK) !== 0,
    oPath: (info.flags & O_FLAGS.O_PATH) !== 0,
  };
  return { ...common, ...classify(pid, fdPath, target, st) };
}

export interface ReadFdsOptions {
  /**
   * Skip fds that close between listing and reading them instead of failing
   * with ENOENT. Only for live, running processes (the caller itself: the
   * listing includes the fd that reads the directory); a frozen process being
   * dumped never needs it.
   */
  skipClosed?: boolean;
}

/** Every fd of a process, ascending. ESRCH when it does not exist or exits meanwhile. */
export function readFds(pid: number, options: ReadFdsOptions = {}): FdDescription[] {
  const out: FdDescription[] = [];
  for (const fd of listFds(pid)) {
    try {
      out.push(readFd(pid, fd));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (options.skipClosed && (code === 'ENOENT' || code === 'EFDCHANGED')) continue;
      throw e;
    }
  }
  // An exited process has no fd table: its fd/ directory lists nothing.
  assertAlive(pid);
  return out;
}
