/**
 * Threads and process trees from /proc (proc(5)):
 *  - /proc/<pid>/task/ lists the threads of a process;
 *  - /proc/<pid>/task/<tid>/children lists the children whose parent is that
 *    thread (CONFIG_PROC_CHILDREN); without it, /proc is scanned for PPid.
 * Children of a process are the union over its threads, since a child's parent
 * is the thread that forked it.
 */
import { readdirSync } from 'node:fs';
import { readStatus } from './status.js';
import { fail, isNoSuchProcess, NoSuchProcessError, parseDec, procPath, readProcText, translateError } from './read.js';

function numericEntries(dir: string, pid: number): number[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    throw translateError(e, pid);
  }
  const out: number[] = [];
  for (const n of names) if (/^\d+$/.test(n)) out.push(Number(n));
  return out.sort((a, b) => a - b);
}

/** Thread ids of a process: the leader (tid = pid) first, then ascending. */
export function listThreads(pid: number): number[] {
  const tids = numericEntries(procPath(pid, 'task'), pid);
  if (!tids.includes(pid)) throw new NoSuchProcessError(pid, null, 'its thread-group leader is gone');
  return [pid, ...tids.filter((t) => t !== pid)];
}

let childrenFileAvailable: boolean | undefined;

/** Whether this kernel has /proc/<pid>/task/<tid>/children (CONFIG_PROC_CHILDREN); probed once. */
export function hasChildrenFile(): boolean {
  // A kernel property, constant for the life of the daemon: cached.
  childrenFileAvailable ??= (() => {
    try {
      readProcText(process.pid, 'children', process.pid);
      return true;
    } catch {
      return false;
    }
  })();
  return childrenFileAvailable;
}

/**
 * Children (pids) whose parent is thread `tid` of process `pid`, ascending.
 * Needs the children file: without it /proc tells a child's parent process
 * (PPid) but not which of its threads forked it, and this does not guess.
 */
export function threadChildren(pid: number, tid: number): number[] {
  if (!hasChildrenFile())
    throw new Error('children of a thread need /proc/<pid>/task/<tid>/children (CONFIG_PROC_CHILDREN)');
  const file = procPath(pid, 'children', tid);
  const text = readProcText(pid, 'children', tid).trim();
  if (text === '') return [];
  const o = { file, line: 1, text };
  return text
    .split(' ')
    .map((s) => parseDec(s, o, 'child pid'))
    .sort((a, b) => a - b);
}

/** Children (pids) of a process: those of every thread, ascending. */
export function processChildren(pid: number): number[] {
  if (!hasChildrenFile()) return scanChildren(pid);
  const all = new Set<number>();
  for (const tid of listThreads(pid)) {
    try {
      for (const c of threadChildren(pid, tid)) all.add(c);
    } catch (e) {
      // A thread that exits while we walk takes no children with it (they are
      // reparented to another thread or to the reaper); the process must stay.
      if (!isNoSuchProcess(e) || e.tid === null) throw e;
    }
  }
  return [...all].sort((a, b) => a - b);
}

/** Every process whose PPid is `pid`, by scanning /proc (no children file). */
function scanChildren(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const candidate = Number(name);
    try {
      if (readStatus(candidate).ppid === pid) out.push(candidate);
    } catch (e) {
      if (!isNoSuchProcess(e)) throw e;
    }
  }
  // The parent itself must still exist for the answer to mean anything.
  readStatus(pid);
  return out.sort((a, b) => a - b);
}

export interface TreeProcess {
  pid: number;
  /** Parent pid; for the root, its real parent outside the tree. */
  ppid: number;
  /** Thread ids, leader first. */
  threads: number[];
  /** Child pids, ascending. */
  children: number[];
}

/**
 * The process tree rooted at `root`: every process with its threads, parents
 * before children (breadth first, children ascending), so a restore can create
 * them in this order. ESRCH when any process of the tree vanishes meanwhile
 * (a dump reads a frozen tree, where that cannot happen).
 */
export function processTree(root: number): TreeProcess[] {
  const out: TreeProcess[] = [];
  const seen = new Set<number>();
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.shift()!;
    if (seen.has(pid)) fail({ file: `/proc/${pid}`, line: 0, text: '' }, 'process appears twice in the tree');
    seen.add(pid);
    const status = readStatus(pid);
    if (status.tgid !== pid)
      throw new Error(`processTree: ${pid} is a thread of process ${status.tgid}, not a process`);
    const entry: TreeProcess = {
      pid,
      ppid: status.ppid,
      threads: listThreads(pid),
      children: processChildren(pid),
    };
    out.push(entry);
    queue.push(...entry.children);
  }
  return out;
}
