/**
 * Open files of a frozen tree (proc(5) /proc/<pid>/fd and fdinfo, pipe(7), fifo(7), tee(2)): what each fd is,
 * whether restore can reopen it, and the pipes the tree uses with the data buffered in them.
 *
 * Restore reopens files by path, so a path must still name the very file (same device and inode) as seen from
 * the process's root; unlinked files and anything without a path to reopen (sockets, anonymous inodes, memfd,
 * block devices, terminals) are refused. Pipes are recreated by identity: every fd naming pipe `id` gets an end of
 * one new pipe.
 */
import { closeSync, constants, openSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { native } from '../../native/index.js';
import { O_FLAGS, type FdDescription, type ProcLinks } from '../proc/index.js';
import type { Problem } from '../errors.js';
import { base64, type FdRecord, type PipeRecord } from './image.js';

/** Character devices that are stateless to reopen, by [major, minor] (Documentation/admin-guide/devices.txt). */
const STATELESS_CHARDEVS = new Map<string, string>([
  ['1:3', '/dev/null'],
  ['1:5', '/dev/zero'],
  ['1:7', '/dev/full'],
  ['1:8', '/dev/random'],
  ['1:9', '/dev/urandom'],
]);

/** One fd that names a pipe (or FIFO), kept to find the pipe's data and the processes sharing it. */
export interface PipeRef {
  id: string;
  pid: number;
  fd: number;
  fifo?: { path: string; dev: number; ino: number };
}

export interface FdsResult {
  records: FdRecord[];
  problems: Problem[];
  pipes: PipeRef[];
}

function problem(pid: number, fd: number, message: string): Problem {
  return { code: 'UNSUPPORTED_FD', pid, what: `fd ${fd}`, message: `process ${pid}: fd ${fd} ${message}` };
}

/** Whether `path`, looked up in the root of process `pid`, is the file with this device and inode. */
function sameFileInRoot(pid: number, path: string, dev: number, ino: number): boolean {
  try {
    const st = statSync(`/proc/${pid}/root${path}`, { bigint: true });
    return Number(st.dev) === dev && Number(st.ino) === ino;
  } catch {
    return false;
  }
}

export function pipeId(inode: number): string {
  return `pipe-${inode}`;
}

export function fifoId(dev: number, ino: number): string {
  return `fifo-${dev}-${ino}`;
}

type Classified = { record: FdRecord; pipe?: PipeRef } | { problem: Problem };

function classifyFd(pid: number, d: FdDescription): Classified {
  const base = { fd: d.fd, cloexec: d.cloexec, flags: d.info.flags & ~O_FLAGS.O_CLOEXEC, pos: d.info.pos };
  const fail = (message: string): Classified => ({ problem: problem(pid, d.fd, message) });
  switch (d.kind) {
    case 'file':
    case 'directory': {
      if (d.deleted) return fail(`is an unlinked ${d.kind} (${d.path}): it cannot be reopened`);
      if (!sameFileInRoot(pid, d.path, d.stat.dev, d.stat.ino))
        return fail(`is ${d.path}, but that path now names another file (renamed or replaced)`);
      if (d.kind === 'directory') return { record: { ...base, kind: 'directory', path: d.path } };
      const { dev, ino, size } = d.stat;
      return { record: { ...base, kind: 'file', path: d.path, dev, ino, size } };
    }
    case 'pipe': {
      if (d.accessMode !== 'r' && d.accessMode !== 'w')
        return fail(`is pipe:[${d.inode}] opened for ${d.accessMode}: only a read or a write end can be recreated`);
      const id = pipeId(d.inode);
      const end = d.accessMode === 'r' ? 'read' : 'write';
      return { record: { ...base, kind: 'pipe', pipe: id, end }, pipe: { id, pid, fd: d.fd } };
    }
    case 'fifo': {
      if (d.deleted) return fail(`is an unlinked FIFO (${d.path})`);
      const { dev, ino } = d.stat;
      const id = fifoId(dev, ino);
      return {
        record: { ...base, kind: 'fifo', path: d.path, pipe: id },
        pipe: { id, pid, fd: d.fd, fifo: { path: d.path, dev, ino } },
      };
    }
    case 'chardev': {
      const known = STATELESS_CHARDEVS.get(`${d.major}:${d.minor}`);
      if (known === undefined) {
        const what = d.major === 4 || d.major === 5 || d.major === 136 ? 'a terminal' : 'a character device';
        return fail(`is ${what} (${d.path}, ${d.major}:${d.minor}): only /dev/null, zero, full, random, urandom`);
      }
      return { record: { ...base, kind: 'chardev', path: d.path, rdev: [d.major, d.minor] } };
    }
    case 'socket':
      return fail(`is a socket (socket:[${d.inode}])`);
    case 'anon_inode':
      return fail(`is an anonymous inode (${d.anonKind})`);
    case 'memfd':
      return fail(`is a memfd (${d.name})`);
    case 'blockdev':
      return fail(`is a block device (${d.path})`);
    default:
      return fail(`is ${d.target}, which is not a file, directory, pipe, FIFO or device`);
  }
}

/** Records for every fd of a process, and a problem for each one restore could not recreate. */
export function describeFds(pid: number, fds: FdDescription[]): FdsResult {
  const out: FdsResult = { records: [], problems: [], pipes: [] };
  for (const d of fds) {
    const c = classifyFd(pid, d);
    if ('problem' in c) {
      out.problems.push(c.problem);
      continue;
    }
    out.records.push(c.record);
    if (c.pipe) out.pipes.push(c.pipe);
  }
  return out;
}

/** cwd and root must be directories restore can chdir/chroot into: not unlinked. */
export function checkLinks(pid: number, links: ProcLinks): Problem[] {
  const out: Problem[] = [];
  for (const [what, target] of [
    ['cwd', links.cwd],
    ['root', links.root],
  ] as const) {
    if (target.endsWith(' (deleted)'))
      out.push({ code: 'UNSUPPORTED_FILE', pid, what, message: `process ${pid}: its ${what} ${target} is unlinked` });
  }
  if (links.exe !== null && links.exe.endsWith(' (deleted)')) {
    out.push({
      code: 'UNSUPPORTED_FILE',
      pid,
      what: 'exe',
      message: `process ${pid}: its executable ${links.exe} is unlinked`,
    });
  }
  return out;
}

/**
 * The bytes buffered in a pipe, without consuming them. The pipe is reopened read-only through the magic link
 * /proc/<pid>/fd/<fd> (which opens the pipe itself, whichever end the process holds: tee(2) needs a read side,
 * and a process may hold only the write end), and tee(2) duplicates its buffers into a private pipe.
 */
export function peekPipe(ref: PipeRef): { data: Buffer; capacity: number } {
  const fd = openSync(`/proc/${ref.pid}/fd/${ref.fd}`, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    return native.pipePeek(fd);
  } finally {
    closeSync(fd);
  }
}

/** What every fd of every process outside `tree` points at that names one of `ids` (pipe:[ino] or a FIFO path). */
function externalHolders(refs: Map<string, PipeRef>, tree: Set<number>): Map<string, number[]> {
  const byTarget = new Map<string, string>();
  for (const ref of refs.values()) {
    byTarget.set(ref.fifo ? ref.fifo.path : `pipe:[${ref.id.slice('pipe-'.length)}]`, ref.id);
  }
  const out = new Map<string, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || tree.has(Number(name))) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${name}/fd`);
    } catch {
      continue; // gone, or a kernel thread
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = readlinkSync(`/proc/${name}/fd/${fd}`);
      } catch {
        continue;
      }
      const id = byTarget.get(target);
      if (id === undefined || !isSameFifo(refs.get(id)!, `/proc/${name}/fd/${fd}`)) continue;
      const list = out.get(id) ?? [];
      if (!list.includes(Number(name))) list.push(Number(name));
      out.set(id, list);
    }
  }
  return out;
}

function isSameFifo(ref: PipeRef, fdPath: string): boolean {
  if (!ref.fifo) return true; // pipe:[ino] names exactly one pipe
  try {
    const st = statSync(fdPath, { bigint: true });
    return Number(st.dev) === ref.fifo.dev && Number(st.ino) === ref.fifo.ino;
  } catch {
    return false;
  }
}

/** One record per pipe the tree uses: its buffered data, capacity, and who outside the tree holds it too. */
export function collectPipes(refs: PipeRef[], tree: Set<number>): PipeRecord[] {
  const unique = new Map<string, PipeRef>();
  for (const r of refs) if (!unique.has(r.id)) unique.set(r.id, r);
  if (unique.size === 0) return [];
  const external = externalHolders(unique, tree);
  return [...unique.values()].map((ref) => {
    const { data, capacity } = peekPipe(ref);
    const rec: PipeRecord = { id: ref.id, data: base64(data), size: capacity };
    if (ref.fifo) rec.fifo = ref.fifo;
    const pids = external.get(ref.id);
    if (pids) rec.externalPids = pids.sort((a, b) => a - b);
    return rec;
  });
}
