/**
 * Threads of a restored process and the per-thread state (clone3(2) CLONE_THREAD with set_tid,
 * set_robust_list(2), set_tid_address(2), rseq(2), sigaltstack(2), rt_tgsigqueueinfo(2), ptrace(2)
 * PTRACE_SETREGSET / PTRACE_SETSIGMASK).
 *
 * Threads are injected clone3 calls in the leader once the memory is in place; each starts traced
 * (PTRACE_O_TRACECLONE) at the gadget's int3 and gets its own registers last. The very last step of a process is
 * the munmap of our region under PTRACE_SYSCALL (restore.cc), after which the dumped registers are set at the
 * syscall-exit stop; the tree is then released in one request.
 */
import { native } from '../../native/index.js';
import { LazyRestoreError } from '../errors.js';
import { Regs } from '../regs.js';
import type { ThreadRecord } from '../dump/image.js';
import type { ProcTask, RestoreContext } from './context.js';
import { tracerHandleOf } from './inject.js';
import { waitFirstStop } from './tree.js';
import { CLONE, CLONE_ARGS_SIZE, SS_DISABLE, SYS } from './sys.js';

const THREAD_FLAGS = CLONE.VM | CLONE.FS | CLONE.FILES | CLONE.SIGHAND | CLONE.THREAD | CLONE.SYSVSEM;
const ALL_SIGNALS = (1n << 64n) - 1n;
const SIGINFO_SIZE = 128;

/** Creates every thread of the process after the leader, with its dumped tid. */
export async function createThreads(ctx: RestoreContext, task: ProcTask): Promise<void> {
  for (const t of task.image.threads.slice(1)) {
    const b = ctx.batch(task);
    const setTid = Buffer.alloc(8);
    setTid.writeBigUInt64LE(BigInt(t.tid));
    const setTidAddr = b.put(setTid);
    const args = Buffer.alloc(CLONE_ARGS_SIZE);
    args.writeBigUInt64LE(BigInt(THREAD_FLAGS), 0);
    args.writeBigUInt64LE(BigInt(setTidAddr), 64);
    args.writeBigUInt64LE(1n, 72);
    b.call(`clone3(thread ${t.tid})`, SYS.clone3, [b.put(args), CLONE_ARGS_SIZE]);
    const [tid] = await b.run();
    if (Number(tid) !== t.tid) {
      throw new LazyRestoreError('RESTORE_FAILED', `process ${task.pid}: clone3 gave tid ${tid}, not ${t.tid}`);
    }
    task.tids.push(t.tid);
    await waitFirstStop(ctx, t.tid);
  }
}

/** Robust futex list, clear-child-tid, rseq (its area is already present) and alternate signal stack. */
export async function restoreThreadState(ctx: RestoreContext, task: ProcTask, t: ThreadRecord): Promise<void> {
  const b = ctx.batch(task, t.tid);
  if (t.robustList.head !== 0) b.call('set_robust_list', SYS.set_robust_list, [t.robustList.head, t.robustList.len]);
  b.call('set_tid_address', SYS.set_tid_address, [t.clearChildTid]);
  if (t.rseq) b.call('rseq', SYS.rseq, [t.rseq.ptr, t.rseq.len, 0, t.rseq.sig]);
  if (!(t.sigaltstack.flags & SS_DISABLE)) {
    const ss = Buffer.alloc(24);
    ss.writeBigUInt64LE(BigInt(t.sigaltstack.sp), 0);
    ss.writeInt32LE(t.sigaltstack.flags, 8);
    ss.writeBigUInt64LE(BigInt(t.sigaltstack.size), 16);
    b.call('sigaltstack', SYS.sigaltstack, [b.put(ss), 0]);
  }
  await b.run();
}

/**
 * Pending signals go back into the queues they were in, with their whole siginfo: each is sent by the thread
 * to itself (the kernel accepts any si_code from the sender itself) while every signal is blocked, so none is
 * delivered before the dumped mask is in place.
 */
export async function queuePending(ctx: RestoreContext, task: ProcTask): Promise<void> {
  for (const tid of task.tids) await ctx.tracer.setSigmask(tid, ALL_SIGNALS);
  for (const t of task.image.threads) {
    const b = ctx.batch(task, t.tid);
    for (const si of t.pending) {
      const info = Buffer.from(si, 'base64');
      if (info.length !== SIGINFO_SIZE) throw new LazyRestoreError('CORRUPT_IMAGE', `thread ${t.tid}: bad siginfo`);
      b.call(`rt_tgsigqueueinfo(${info.readInt32LE(0)})`, SYS.rt_tgsigqueueinfo, [
        task.pid,
        t.tid,
        info.readInt32LE(0),
        b.put(info),
      ]);
    }
    if (t.tid === task.pid) {
      for (const si of task.image.record!.sharedPending) {
        const info = Buffer.from(si, 'base64');
        b.call(`rt_sigqueueinfo(${info.readInt32LE(0)})`, SYS.rt_sigqueueinfo, [
          task.pid,
          info.readInt32LE(0),
          b.put(info),
        ]);
      }
    }
    await b.run();
  }
}

/** The dumped registers, to be set with orig_rax = -1 (no syscall restart on the way out of the stop). */
function finalRegs(t: ThreadRecord): Regs {
  const regs = new Regs(Buffer.from(t.regs, 'base64'));
  regs.orig_rax = -1n;
  return regs;
}

/**
 * The last step of a process: XSAVE state of every thread, munmap of our region from the leader under
 * PTRACE_SYSCALL, then the dumped registers and signal masks of every thread (the mask last: pending signals
 * it leaves unblocked are delivered as soon as the tree is released).
 */
export async function finishProcess(ctx: RestoreContext, task: ProcTask): Promise<void> {
  for (const t of task.image.threads) await ctx.tracer.setXstate(t.tid, Buffer.from(t.xstate, 'base64'));
  const region = task.region!;
  await native.restoreUnmapGadget(tracerHandleOf(ctx.tracer), task.pid, task.gadget, region.start, region.size);
  task.region = null;
  for (const t of task.image.threads) {
    await ctx.tracer.setRegs(t.tid, finalRegs(t));
    await ctx.tracer.setSigmask(t.tid, BigInt(t.sigmask));
  }
}
