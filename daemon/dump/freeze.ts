/**
 * Freezing a process tree for a dump, and letting it go again (ptrace(2), "Attaching and detaching",
 * "Group-stop", PTRACE_SEIZE / PTRACE_INTERRUPT).
 *
 * Every thread of every process of the tree is seized with TRACECLONE|TRACEFORK|TRACEVFORK, so a task born
 * while we work is attached by the kernel itself (it starts in a PTRACE_EVENT_STOP), then interrupted; the tree
 * is rescanned until a scan finds no task we do not hold. A task that reports a fork/clone event is let finish
 * that syscall (the pending interrupt stops it right after), so nothing is dumped in the middle of creating a
 * child. Signals that arrive meanwhile are passed on, as if we were not there.
 *
 * Release detaches every task: each resumes as it was (a group-stopped task stays stopped: the kernel puts it
 * back into its group-stop at PTRACE_DETACH). Kill sends SIGKILL to every process and waits until the tracer has
 * seen each thread die; the processes are then reaped by their own parents, never by us.
 */
import { existsSync } from 'node:fs';
import { isNoSuchProcess, processTree, readStat, readStatus, type TreeProcess } from '../proc/index.js';
import { PTRACE_EVENT, PTRACE_O, type Tracer } from '../tracer.js';
import type { WaitStatus } from '../../native/index.js';
import { LazyRestoreError } from '../errors.js';

const SEIZE_OPTIONS = PTRACE_O.TRACECLONE | PTRACE_O.TRACEFORK | PTRACE_O.TRACEVFORK;
const STOP_SIGNALS = new Set([19, 20, 21, 22]); // SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU
const SIGKILL = 9;
/** Rescans before we give up on a tree that keeps creating tasks faster than we stop them. */
const MAX_ROUNDS = 64;

export interface FrozenProcess {
  pid: number;
  ppid: number;
  /** Thread ids we hold, leader first (empty for a zombie). */
  tids: number[];
  children: number[];
  zombie: boolean;
  /** Group-stopped (SIGSTOP & co.) when we froze it: restored stopped. */
  stopped: boolean;
}

export interface FreezeOptions {
  /** How long one task may take to stop. */
  timeoutMs?: number;
}

function errCode(e: unknown): string | undefined {
  return (e as { code?: unknown }).code as string | undefined;
}

/** Whether `tracerTid` (TracerPid of some task) is a thread of this process, i.e. our tracer thread. */
function isOurThread(tracerTid: number): boolean {
  return tracerTid !== 0 && existsSync(`/proc/self/task/${tracerTid}`);
}

function stateOf(pid: number): string | null {
  try {
    return readStat(pid).state;
  } catch (e) {
    if (isNoSuchProcess(e)) return null;
    throw e;
  }
}

export class Freezer {
  /** Tids we are attached to and that are stopped (or about to report their stop). */
  private readonly held = new Set<number>();
  /** tid -> the signal of its PTRACE_EVENT_STOP (SIGTRAP for our interrupt, a stop signal for group-stop). */
  private readonly stopSignal = new Map<number, number>();
  private readonly timeoutMs: number;

  constructor(
    readonly tracer: Tracer,
    options: FreezeOptions = {},
  ) {
    this.timeoutMs = options.timeoutMs ?? 10_000;
  }

  /** Tids currently held. */
  get tids(): number[] {
    return [...this.held];
  }

  /** Whether the thread was group-stopped (stopped by SIGSTOP & co.) when it was frozen. */
  groupStopped(tid: number): boolean {
    return STOP_SIGNALS.has(this.stopSignal.get(tid) ?? 0);
  }

  /** Stops every task of the tree rooted at `root`; returns the frozen tree, parents before children. */
  async freeze(root: number): Promise<FrozenProcess[]> {
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const tree = this.scan(root);
      const fresh: number[] = [];
      for (const p of tree) {
        if (stateOf(p.pid) === 'Z') continue;
        for (const tid of p.threads) if (!this.held.has(tid)) fresh.push(tid);
      }
      if (fresh.length === 0) return this.describe(tree);
      const attached: number[] = [];
      for (const tid of fresh) if (await this.attach(p(tree, tid), tid)) attached.push(tid);
      for (const tid of attached) await this.waitStopped(tid);
    }
    throw new LazyRestoreError('FREEZE_FAILED', `process ${root}: the tree kept creating tasks while being frozen`, {
      pid: root,
    });
  }

  /** Detaches every held task (each resumes exactly as it was), then ends the tracer thread. */
  async release(): Promise<void> {
    for (const tid of this.held) {
      try {
        await this.tracer.detach(tid, 0);
      } catch (e) {
        // A task that is not in a ptrace-stop (it was still on its way to one when a freeze failed) cannot be
        // detached by request; closing the tracer thread below detaches it in the kernel (exit_ptrace).
        if (errCode(e) !== 'ESRCH') throw e;
      }
    }
    this.held.clear();
    await this.tracer.close();
  }

  /** SIGKILLs every live process of `processes`, waits until each held thread is gone, ends the tracer. */
  async kill(processes: FrozenProcess[]): Promise<void> {
    for (const p of processes) {
      if (p.zombie) continue;
      try {
        process.kill(p.pid, SIGKILL);
      } catch (e) {
        if (errCode(e) !== 'ESRCH') throw e;
      }
    }
    // A thread-group leader's exit is reported only once its other threads are reaped (and a traced thread
    // stays a zombie until its tracer reaps it), so each process's leader comes last.
    const order = processes.flatMap((p) => [...p.tids.slice(1), ...p.tids.slice(0, 1)]);
    for (const tid of order) if (this.held.has(tid)) await this.waitGone(tid);
    this.held.clear();
    await this.tracer.close();
  }

  private async waitGone(tid: number): Promise<void> {
    for (;;) {
      let st: WaitStatus;
      try {
        st = await this.tracer.wait(tid, this.timeoutMs);
      } catch (e) {
        if (errCode(e) === 'ECHILD' || errCode(e) === 'ESRCH') return;
        throw e;
      }
      if (st.kind !== 'stopped') return;
      // A stop that was already being reported when SIGKILL came: let the task go on dying.
      await this.tracer.cont(tid, 0).catch(() => undefined);
    }
  }

  private scan(root: number): TreeProcess[] {
    // processTree fails with ESRCH when a process exits between two reads; only the tasks we have not
    // stopped yet can do that, so scanning again converges.
    for (let i = 0; ; i++) {
      try {
        return processTree(root);
      } catch (e) {
        if (!isNoSuchProcess(e) || e.pid === root || i >= 10) throw e;
      }
    }
  }

  /** Seizes and interrupts `tid`; false when it is gone. A task the kernel attached for us is only adopted. */
  private async attach(pid: number, tid: number): Promise<boolean> {
    let tracerPid: number;
    try {
      tracerPid = readStatus(pid, tid).tracerPid;
    } catch (e) {
      if (isNoSuchProcess(e)) return false;
      throw e;
    }
    if (isOurThread(tracerPid)) {
      // Auto-attached (born of a task we hold): it starts in a PTRACE_EVENT_STOP of its own.
      this.held.add(tid);
      return true;
    }
    if (tracerPid !== 0) {
      throw new LazyRestoreError(
        'UNSUPPORTED_TASK',
        `process ${pid}: thread ${tid} is traced by process ${tracerPid} (a debugger or another checkpointer)`,
        { pid },
      );
    }
    try {
      await this.tracer.seize(tid, SEIZE_OPTIONS);
    } catch (e) {
      if (errCode(e) === 'ESRCH') return false;
      // EPERM also answers a seize of a thread that is exiting: it will not be dumped, so it is skipped.
      const state = stateOf(tid);
      if (errCode(e) === 'EPERM' && (state === null || state === 'Z' || state === 'X')) return false;
      throw new LazyRestoreError('FREEZE_FAILED', `process ${pid}: cannot attach to thread ${tid}: ${String(e)}`, {
        pid,
        cause: e,
      });
    }
    this.held.add(tid);
    await this.tracer.interrupt(tid);
    return true;
  }

  private async waitStopped(tid: number): Promise<void> {
    for (;;) {
      let st: WaitStatus;
      try {
        st = await this.tracer.wait(tid, this.timeoutMs);
      } catch (e) {
        if (errCode(e) !== 'ETIMEDOUT') throw e;
        throw new LazyRestoreError(
          'FREEZE_FAILED',
          `thread ${tid} did not stop within ${this.timeoutMs} ms (${describeTask(tid)})`,
          { cause: e },
        );
      }
      if (st.kind !== 'stopped') {
        this.held.delete(tid); // it exited meanwhile; the next scan sees what is left
        return;
      }
      if (st.event === PTRACE_EVENT.STOP) {
        this.stopSignal.set(tid, st.signal);
        return;
      }
      if (st.event === PTRACE_EVENT.VFORK) {
        throw new LazyRestoreError(
          'UNSUPPORTED_TASK',
          `thread ${tid} is in vfork(): it waits for its child to exec or exit and cannot be frozen with it; retry`,
        );
      }
      // A fork/clone event: let the syscall complete, the pending interrupt stops the task just after it.
      // A signal-delivery-stop: deliver the signal, as if we were not tracing.
      await this.tracer.cont(tid, st.event === 0 ? st.signal : 0);
    }
  }

  private describe(tree: TreeProcess[]): FrozenProcess[] {
    return tree.map((t) => {
      const zombie = stateOf(t.pid) === 'Z';
      const tids = zombie ? [] : t.threads.filter((tid) => this.held.has(tid));
      return {
        pid: t.pid,
        ppid: t.ppid,
        tids,
        children: t.children,
        zombie,
        stopped: tids.length > 0 && tids.every((tid) => this.groupStopped(tid)),
      };
    });
  }
}

/** The process a thread of `tree` belongs to. */
function p(tree: TreeProcess[], tid: number): number {
  const owner = tree.find((t) => t.threads.includes(tid));
  if (owner === undefined) throw new Error(`thread ${tid} is not in the scanned tree`);
  return owner.pid;
}

/** State and wait channel of a task, for a message about why it would not stop. */
function describeTask(tid: number): string {
  try {
    const st = readStat(tid);
    return `state ${st.state}${st.state === 'D' ? ', in an uninterruptible sleep' : ''}`;
  } catch {
    return 'state unknown';
  }
}
