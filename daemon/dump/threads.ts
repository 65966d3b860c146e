/**
 * Per-thread state of a frozen task (ptrace(2) PTRACE_GETREGSET NT_PRSTATUS / NT_X86_XSTATE,
 * PTRACE_GETSIGMASK, PTRACE_PEEKSIGINFO, PTRACE_GET_RSEQ_CONFIGURATION; rseq(2); syscall restart in
 * signal(7) and docs/image-format.md).
 */
import { native } from '../../native/index.js';
import { Regs } from '../regs.js';
import type { Tracer } from '../tracer.js';
import { base64, hex64, type ThreadRecord } from './image.js';
import type { Scratch } from './inject.js';
import { pendingSignals, tracerHandle } from './signals.js';

const ERESTARTSYS = -512n;
const ERESTARTNOINTR = -513n;
const ERESTARTNOHAND = -514n;
const ERESTART_RESTARTBLOCK = -516n;
const EINTR = -4n;
/** Length of the `syscall` instruction, by which rip is moved back to re-issue it. */
const SYSCALL_INSN = 2n;

/**
 * The registers as restore must set them. A thread frozen inside an interruptible syscall shows one of the
 * kernel-internal restart codes in rax; the kernel would itself turn them into a re-issued syscall on the way
 * out (rax = orig_rax, rip -= 2). ERESTART_RESTARTBLOCK would resume through restart_syscall(2) and a restart
 * block that lives in the kernel's task only (nanosleep's remaining time, ...), which a restore cannot bring
 * back: the syscall returns EINTR instead, as CRIU does. orig_rax is kept; restore sets it to -1.
 */
export function fixSyscallRestart(raw: Buffer): Buffer {
  const regs = new Regs(Buffer.from(raw));
  if (regs.signed('orig_rax') < 0n) return regs.buffer;
  const rax = regs.signed('rax');
  if (rax === ERESTARTSYS || rax === ERESTARTNOINTR || rax === ERESTARTNOHAND) {
    regs.rax = regs.orig_rax;
    regs.rip = regs.rip - SYSCALL_INSN;
  } else if (rax === ERESTART_RESTARTBLOCK) {
    regs.rax = EINTR;
  }
  return regs.buffer;
}

/** struct ptrace_rseq_configuration: u64 rseq_abi_pointer, u32 rseq_abi_size, u32 signature, u32 flags, u32 pad. */
export function decodeRseq(buf: Buffer): ThreadRecord['rseq'] {
  if (buf.length < 16) throw new Error(`ptrace_rseq_configuration of ${buf.length} bytes`);
  const ptr = buf.readBigUInt64LE(0);
  if (ptr === 0n) return null;
  return { ptr: Number(ptr), len: buf.readUInt32LE(8), sig: buf.readUInt32LE(12) };
}

/**
 * Everything per thread. Call after at least one injected syscall in this thread: a thread frozen in
 * sigsuspend/ppoll/pselect/epoll_pwait runs with the syscall's temporary mask until it leaves the syscall,
 * and the injection is what makes the kernel put its real mask back (TIF_RESTORE_SIGMASK) — which is the mask
 * a restore must give it before it re-issues the syscall.
 */
export async function readThread(
  tracer: Tracer,
  scratch: Scratch,
  pid: number,
  tid: number,
  groupStopped: boolean,
): Promise<ThreadRecord> {
  const injected = await scratch.thread(tid);
  const regs = fixSyscallRestart((await tracer.getRegs(tid)).buffer);
  const xstate = await tracer.getXstate(tid);
  const sigmask = await tracer.getSigmask(tid);
  const pending = await pendingSignals(tracer, tid, false);
  const rseq = decodeRseq(await native.tracerGetRseqConfiguration(tracerHandle(tracer), tid));
  return {
    tid,
    pid,
    regs: base64(regs),
    xstate: base64(xstate),
    sigmask: hex64(sigmask),
    pending,
    sigaltstack: injected.sigaltstack,
    rseq,
    robustList: injected.robustList,
    clearChildTid: injected.clearChildTid,
    groupStopped,
  };
}
