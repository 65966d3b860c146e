/**
 * A Tracer owns one native tracer thread (ptrace is per thread: every request
 * for a tracee must come from the thread that seized it) and mirrors its
 * requests as promise-returning methods, plus the conveniences dump and
 * restore need: seize-and-stop, and injected syscalls taking numbers or
 * bigints.
 *
 * Closing: pending requests still run, but waits in progress (and waits
 * queued behind them) reject with ECANCELED, and an injected syscall that is
 * still blocked is interrupted. When the tracer thread ends, the kernel
 * detaches every tracee it still holds: each resumes as after PTRACE_DETACH
 * with no signal (tracees seized with PTRACE_O_EXITKILL are killed instead).
 * A Tracer that is garbage-collected without close() is stopped the same way.
 *
 * Do not trace a process that Node spawned itself (child_process): libuv
 * reaps its children with waitpid(pid), and the kernel lets any thread of the
 * tracer's process collect the ptrace stops of its tracees, so libuv would take
 * the stops of that thread-group leader and report them as its exit. Its other
 * threads, grandchildren and unrelated processes are fine. Waits reap the
 * exits they report, like waitpid(tid, __WALL).
 *
 * Injected syscalls (tracerSyscall): the tracee runs `syscall; int3` with the
 * caller's arguments and orig_rax = -1, and gets its registers (and borrowed
 * code bytes) back afterwards; it is then in the SIGTRAP signal-delivery-stop
 * of that int3, which the next cont/detach with signal 0 discards. Signals
 * that arrive meanwhile are held back and re-sent to the thread afterwards
 * (full siginfo for sigqueue-style signals, the signal number otherwise).
 * A fault of the injected code before the syscall rejects with EFAULT; at the
 * int3 (the syscall unmapped its own gadget) the result still stands. A tracee
 * that ignores SIGTRAP, or blocks it inside sigsuspend/ppoll/pselect and the
 * like, is refused with EOPNOTSUPP (= ENOTSUP), because the int3 would alter that state.
 */
import { constants as osConstants } from 'node:os';
import { native, type SystemError, type TracerHandle, type WaitStatus } from '../native/index.js';
import { Regs } from './regs.js';

/** PTRACE_O_* options for {@link Tracer.seize}. */
export const PTRACE_O = {
  TRACESYSGOOD: 0x1,
  TRACEFORK: 0x2,
  TRACEVFORK: 0x4,
  TRACECLONE: 0x8,
  TRACEEXEC: 0x10,
  TRACEVFORKDONE: 0x20,
  TRACEEXIT: 0x40,
  TRACESECCOMP: 0x80,
  EXITKILL: 0x100000,
  SUSPEND_SECCOMP: 0x200000,
} as const;

/** PTRACE_EVENT_* values as reported in {@link WaitStatus}.event. */
export const PTRACE_EVENT = {
  FORK: 1,
  VFORK: 2,
  CLONE: 3,
  EXEC: 4,
  VFORK_DONE: 5,
  EXIT: 6,
  SECCOMP: 7,
  STOP: 128,
} as const;

export type SyscallArg = number | bigint;

function toBigArg(v: SyscallArg): bigint {
  if (typeof v === 'bigint') return v;
  if (!Number.isSafeInteger(v)) throw new RangeError(`syscall argument ${v} is not a safe integer`);
  return BigInt(v);
}

const errnoNames = new Map<number, string>(Object.entries(osConstants.errno).map(([name, n]) => [n, name]));

/** For a raw syscall result: the errno it encodes (-4095..-1), else 0. */
export function syscallErrno(result: bigint): number {
  return result < 0n && result >= -4095n ? Number(-result) : 0;
}

/** An error for an injected syscall that failed, shaped like a SystemError. */
export function injectedSyscallError(name: string, tid: number, errno: number): SystemError {
  const code = errnoNames.get(errno) ?? `E${errno}`;
  const err = new Error(`${code}: injected ${name} failed in tid ${tid}`) as SystemError;
  err.code = code;
  err.errno = -errno;
  err.syscall = name;
  return err;
}

export class Tracer {
  private constructor(private readonly handle: TracerHandle) {}

  /** Starts a tracer thread. Idle, it does not keep Node's event loop alive. */
  static open(): Tracer {
    return new Tracer(native.tracerOpen());
  }

  /** Stops the thread after the requests already queued; see the module comment. */
  close(): Promise<void> {
    return native.tracerClose(this.handle);
  }

  seize(tid: number, options = 0): Promise<void> {
    return native.tracerSeize(this.handle, tid, options);
  }

  interrupt(tid: number): Promise<void> {
    return native.tracerInterrupt(this.handle, tid);
  }

  wait(tid: number, timeoutMs?: number): Promise<WaitStatus> {
    return native.tracerWait(this.handle, tid, timeoutMs);
  }

  cont(tid: number, signal = 0): Promise<void> {
    return native.tracerCont(this.handle, tid, signal);
  }

  detach(tid: number, signal = 0): Promise<void> {
    return native.tracerDetach(this.handle, tid, signal);
  }

  /**
   * PTRACE_SEIZE then PTRACE_INTERRUPT, and waits for the resulting
   * PTRACE_EVENT_STOP. A signal-delivery-stop that comes first (a signal was
   * already on its way) is passed on to the tracee, as if it had not been
   * traced, and the wait goes on. Rejects if the task exits meanwhile.
   */
  async seizeAndInterrupt(tid: number, options = 0, timeoutMs = 10_000): Promise<void> {
    await this.seize(tid, options);
    await this.interrupt(tid);
    for (;;) {
      const st = await this.wait(tid, timeoutMs);
      if (st.kind !== 'stopped') throw new Error(`tid ${tid} ended (${JSON.stringify(st)}) before it could be stopped`);
      if (st.event === PTRACE_EVENT.STOP) return;
      await this.cont(tid, st.event === 0 ? st.signal : 0);
    }
  }

  async getRegs(tid: number): Promise<Regs> {
    return new Regs(await native.tracerGetRegs(this.handle, tid));
  }

  setRegs(tid: number, regs: Regs | Buffer): Promise<void> {
    return native.tracerSetRegs(this.handle, tid, regs instanceof Regs ? regs.buffer : regs);
  }

  getXstate(tid: number): Promise<Buffer> {
    return native.tracerGetXstate(this.handle, tid);
  }

  setXstate(tid: number, xstate: Buffer): Promise<void> {
    return native.tracerSetXstate(this.handle, tid, xstate);
  }

  /** The blocked-signal mask; bit (n - 1) stands for signal n. */
  async getSigmask(tid: number): Promise<bigint> {
    return (await native.tracerGetSigmask(this.handle, tid)).readBigUInt64LE(0);
  }

  setSigmask(tid: number, mask: bigint): Promise<void> {
    const buf = Buffer.alloc(8);
    buf.writeBigUInt64LE(BigInt.asUintN(64, mask));
    return native.tracerSetSigmask(this.handle, tid, buf);
  }

  readMemory(tid: number, address: number, length: number): Promise<Buffer> {
    return native.tracerReadMemory(this.handle, tid, address, length);
  }

  writeMemory(tid: number, address: number, data: Buffer): Promise<void> {
    return native.tracerWriteMemory(this.handle, tid, address, data);
  }

  /** Runs syscall `nr` in the stopped tracee, borrowing the code at its rip;
   *  returns the raw result (negative errno on failure). */
  syscall(tid: number, nr: number, ...args: SyscallArg[]): Promise<bigint> {
    return native.tracerSyscall(this.handle, tid, nr, args.map(toBigArg));
  }

  /** As {@link syscall}, through a `syscall; int3` gadget already mapped in the tracee. */
  syscallAt(tid: number, gadget: number, nr: number, ...args: SyscallArg[]): Promise<bigint> {
    return native.tracerSyscall(this.handle, tid, nr, args.map(toBigArg), gadget);
  }

  /** As {@link syscall}, but a -errno result rejects with a SystemError-shaped error. */
  async syscallOk(tid: number, nr: number, ...args: SyscallArg[]): Promise<bigint> {
    const result = await this.syscall(tid, nr, ...args);
    const errno = syscallErrno(result);
    if (errno !== 0) throw injectedSyscallError(`syscall ${nr}`, tid, errno);
    return result;
  }
}
