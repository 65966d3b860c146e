/**
 * Refusals a dump makes before it touches anything: a target that is not a dumpable process, and a tree that
 * holds state restore cannot recreate. Run on the live tree first (nothing frozen, nothing written), and the
 * same checks run again on the frozen tree, which is the one that counts (the tree may change in between).
 */
import { isNoSuchProcess, processTree, readFds, readSmaps, readStat, readStatus } from '../proc/index.js';
import { LazyRestoreError, refusal, type Problem } from '../errors.js';
import { checkLinks, describeFds } from './files.js';
import { planMemory } from './memory.js';
import { checkProcess, readProcessFacts } from './process.js';

/** This process and every ancestor of it, up to pid 1: freezing any of them would freeze ourselves. */
export function selfAndAncestors(): Set<number> {
  const out = new Set<number>();
  for (let pid = process.pid; pid > 0 && !out.has(pid);) {
    out.add(pid);
    try {
      pid = readStatus(pid).ppid;
    } catch {
      break;
    }
  }
  return out;
}

/** Throws the error for a `pid` that cannot be the root of a dump at all. */
export function checkTarget(pid: number): void {
  if (!Number.isSafeInteger(pid) || pid <= 0) {
    throw new LazyRestoreError('INVALID_ARGUMENT', `not a process id: ${String(pid)}`);
  }
  let status;
  let stat;
  try {
    status = readStatus(pid);
    stat = readStat(pid);
  } catch (e) {
    if (isNoSuchProcess(e)) throw new LazyRestoreError('NO_SUCH_PROCESS', `no such process: ${pid}`, { pid, cause: e });
    throw e;
  }
  if (stat.kernelThread || status.kthread === true) {
    throw new LazyRestoreError(
      'KERNEL_THREAD',
      `process ${pid} (${stat.comm}) is a kernel thread: it has no user space to dump`,
      {
        pid,
      },
    );
  }
  if (status.tgid !== pid) {
    throw new LazyRestoreError('INVALID_ARGUMENT', `${pid} is a thread of process ${status.tgid}: dump the process`, {
      pid,
    });
  }
  if (stat.state === 'Z' || stat.state === 'X') {
    throw new LazyRestoreError('NO_SUCH_PROCESS', `process ${pid} (${stat.comm}) has exited (it is a zombie)`, { pid });
  }
  if (pid === process.pid) {
    throw new LazyRestoreError('DUMP_SELF', `process ${pid} is lazyrestore itself: it cannot freeze itself`, { pid });
  }
  if (selfAndAncestors().has(pid)) {
    throw new LazyRestoreError(
      'DUMP_SELF',
      `process ${pid} (${stat.comm}) is an ancestor of lazyrestore (pid ${process.pid}): dumping its tree would freeze lazyrestore itself`,
      { pid },
    );
  }
}

interface LiveCheck {
  problems: Problem[];
  /** Private pages smaps counts, and the shared objects mapped (id -> pages mapped here). */
  pages: number;
  shmem: Map<string, number>;
}

/** Problems of one live process; none for a process that exits meanwhile (the frozen check has the last word). */
function checkLiveProcess(pid: number, root: number): LiveCheck {
  const none: LiveCheck = { problems: [], pages: 0, shmem: new Map() };
  try {
    const f = readProcessFacts(pid);
    if (f.stat.state === 'Z') {
      if (f.status.threads <= 1) return none;
      const message = `process ${pid} (${f.comm}): its main thread has exited while ${f.status.threads - 1} other threads run`;
      return { ...none, problems: [{ code: 'UNSUPPORTED_TASK', pid, what: 'leader', message }] };
    }
    const out: Problem[] = [];
    if (pid === root && f.status.ppid === process.pid) {
      // libuv reaps the children Node spawned with waitpid(pid), which would also collect their ptrace stops.
      const message = `process ${pid} (${f.comm}) is a child of lazyrestore itself, which cannot trace its own children`;
      out.push({ code: 'UNSUPPORTED_TASK', pid, what: 'parent', message });
    }
    if (f.status.tracerPid !== 0) {
      const message = `process ${pid} (${f.comm}) is traced by process ${f.status.tracerPid} (a debugger or another checkpointer)`;
      out.push({ code: 'UNSUPPORTED_TASK', pid, what: 'tracer', message });
    }
    out.push(...checkProcess(f), ...checkLinks(pid, f.links));
    out.push(...describeFds(pid, readFds(pid, { skipClosed: true })).problems);
    const plan = planMemory(pid, readSmaps(pid));
    out.push(...plan.problems);
    return { problems: out, pages: plan.estimatedPages, shmem: new Map(plan.shmem.map((m) => [m.id, m.mappedPages])) };
  } catch (e) {
    if (isNoSuchProcess(e) && pid !== root) return none;
    throw e;
  }
}

export interface PreflightResult {
  /** Pages the dump will probably keep: private pages smaps counts, plus the pages of each shared object in use. */
  estimatedPages: number;
}

/** Refuses (throws) when the live tree rooted at `root` holds anything restore could not recreate. */
export function preflight(root: number): PreflightResult {
  checkTarget(root);
  let tree;
  try {
    tree = processTree(root);
  } catch (e) {
    if (isNoSuchProcess(e) && e.pid === root) throw new LazyRestoreError('NO_SUCH_PROCESS', `no such process: ${root}`);
    // Another process of the tree exited while we walked it: walk it again once it is frozen.
    if (isNoSuchProcess(e)) return { estimatedPages: 0 };
    throw e;
  }
  const checks = tree.map((p) => checkLiveProcess(p.pid, root));
  const problems = checks.flatMap((c) => c.problems);
  if (problems.length > 0) throw refusal(problems);
  // A shared object counts once, with the most pages any process of the tree has mapped.
  const shmem = new Map<string, number>();
  for (const [id, pages] of checks.flatMap((c) => [...c.shmem])) shmem.set(id, Math.max(shmem.get(id) ?? 0, pages));
  return { estimatedPages: checks.reduce((n, c) => n + c.pages, 0) + [...shmem.values()].reduce((n, p) => n + p, 0) };
}
