/**
 * State only a task can report about itself, read with syscalls injected into the frozen task (ptrace(2),
 * mmap(2), rt_sigaction(2), sigaltstack(2), prctl(2) PR_GET_TID_ADDRESS / PR_GET_PDEATHSIG, get_robust_list(2),
 * brk(2)).
 *
 * A scratch page is mapped in the process (the mmap borrows three code bytes at the leader's rip, see
 * daemon/tracer.ts) and holds a `syscall; int3` gadget plus room for the structures the kernel writes back;
 * every later syscall runs through the gadget, in whichever thread it concerns (they share the page). The page
 * is unmapped by the same borrowing path before the task is released, so the address space is as it was. The
 * only lasting trace is the page of code the first and last injections borrowed: ptrace's forced write made it
 * a private copy (same bytes), which a dump taken afterwards sees as a dirtied page of that file mapping.
 */
import { injectedSyscallError, syscallErrno, type Tracer } from '../tracer.js';
import { SYS } from '../regs.js';
import { LazyRestoreError } from '../errors.js';
import type { SigactionRecord } from './image.js';
import { hex64 } from './image.js';

const PAGE = 4096;
const PROT_RWX = 0x7;
const MAP_PRIVATE_ANONYMOUS = 0x22;
const GADGET = Buffer.from([0x0f, 0x05, 0xcc]); // syscall; int3
/** Where results land in the page: after the gadget, one 32-byte slot per signal (kernel struct sigaction). */
const OUT = 64;
const SIGACTION_SIZE = 32;
const PR_GET_PDEATHSIG = 2;
const PR_GET_TID_ADDRESS = 40;
const SIGSET_SIZE = 8;

export interface ThreadInjected {
  sigaltstack: { sp: number; flags: number; size: number };
  clearChildTid: number;
  robustList: { head: number; len: number };
}

/** A u64 that is an address or a length in user space: exact as a number. */
function u64(buf: Buffer, off: number, what: string): number {
  const v = buf.readBigUInt64LE(off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`${what} 0x${v.toString(16)} is beyond 2^53`);
  return Number(v);
}

export class Scratch {
  private constructor(
    private readonly tracer: Tracer,
    readonly pid: number,
    /** The thread whose code the mmap borrowed, and that the munmap borrows again. */
    private readonly borrower: number,
    readonly base: number,
  ) {}

  /** Maps the scratch page in process `pid` through thread `tid` (a thread we hold stopped). */
  static async map(tracer: Tracer, pid: number, tid: number): Promise<Scratch> {
    const r = await tracer.syscall(tid, SYS.mmap, 0, PAGE, PROT_RWX, MAP_PRIVATE_ANONYMOUS, -1, 0);
    const errno = syscallErrno(r);
    if (errno !== 0) throw injectedSyscallError('mmap', tid, errno);
    const scratch = new Scratch(tracer, pid, tid, Number(r));
    try {
      await tracer.writeMemory(tid, scratch.base, GADGET);
    } catch (e) {
      await scratch.unmap();
      throw e;
    }
    return scratch;
  }

  /** Unmaps the page (through the borrowed code again, not the gadget: a syscall that unmaps its own gadget
   *  faults on the int3, and the forced SIGSEGV could reset a blocked or ignored SIGSEGV handler). */
  async unmap(): Promise<void> {
    const r = await this.tracer.syscall(this.borrower, SYS.munmap, this.base, PAGE);
    const errno = syscallErrno(r);
    if (errno !== 0) throw injectedSyscallError('munmap', this.borrower, errno);
  }

  /** Runs syscall `nr` in thread `tid` through the gadget; a -errno result throws. */
  async call(tid: number, name: string, nr: number, ...args: Array<number | bigint>): Promise<bigint> {
    const r = await this.tracer.syscallAt(tid, this.base, nr, ...args);
    const errno = syscallErrno(r);
    if (errno !== 0) throw injectedSyscallError(name, tid, errno);
    return r;
  }

  read(tid: number, offset: number, length: number): Promise<Buffer> {
    return this.tracer.readMemory(tid, this.base + offset, length);
  }

  /** The current program break: brk(0) changes nothing and returns it. */
  async brk(tid: number): Promise<number> {
    return Number(await this.call(tid, 'brk', SYS.brk, 0));
  }

  /** The parent-death signal of thread `tid`. */
  async pdeathsig(tid: number): Promise<number> {
    await this.call(tid, 'prctl(PR_GET_PDEATHSIG)', SYS.prctl, PR_GET_PDEATHSIG, this.base + OUT);
    return (await this.read(tid, OUT, 4)).readInt32LE(0);
  }

  /** The dispositions of `signals` (process-wide: one thread answers for all). */
  async sigactions(tid: number, signals: number[]): Promise<SigactionRecord[]> {
    if (signals.length * SIGACTION_SIZE > PAGE - OUT) throw new RangeError('too many signals for the scratch page');
    for (let i = 0; i < signals.length; i++) {
      const out = this.base + OUT + i * SIGACTION_SIZE;
      await this.call(tid, `rt_sigaction(${signals[i]})`, SYS.rt_sigaction, signals[i]!, 0, out, SIGSET_SIZE);
    }
    const buf = await this.read(tid, OUT, signals.length * SIGACTION_SIZE);
    return signals.map((signo, i) => {
      // struct kernel_sigaction on x86-64: handler, flags, restorer, mask (u64 each).
      const off = i * SIGACTION_SIZE;
      return {
        signo,
        handler: u64(buf, off, 'sa_handler'),
        flags: hex64(buf.readBigUInt64LE(off + 8)),
        restorer: u64(buf, off + 16, 'sa_restorer'),
        mask: hex64(buf.readBigUInt64LE(off + 24)),
      };
    });
  }

  /** Per-thread state: alternate signal stack, clear_child_tid, robust futex list. */
  async thread(tid: number): Promise<ThreadInjected> {
    const ss = this.base + OUT;
    const tidAddr = ss + 32;
    const head = tidAddr + 8;
    const len = head + 8;
    await this.call(tid, 'sigaltstack', SYS.sigaltstack, 0, ss);
    await this.call(tid, 'prctl(PR_GET_TID_ADDRESS)', SYS.prctl, PR_GET_TID_ADDRESS, tidAddr);
    await this.call(tid, 'get_robust_list', SYS.get_robust_list, 0, head, len);
    const buf = await this.read(tid, OUT, 56);
    // stack_t: void *ss_sp; int ss_flags; (4 bytes padding) size_t ss_size.
    return {
      sigaltstack: { sp: u64(buf, 0, 'ss_sp'), flags: buf.readInt32LE(8), size: u64(buf, 16, 'ss_size') },
      clearChildTid: u64(buf, 32, 'clear_child_tid'),
      robustList: { head: u64(buf, 40, 'robust_list head'), len: u64(buf, 48, 'robust_list len') },
    };
  }
}

/** Runs `fn` with a scratch page in `pid`, and always unmaps it again (a failure to unmap wins over `fn`'s). */
export async function withScratch<T>(
  tracer: Tracer,
  pid: number,
  tid: number,
  fn: (s: Scratch) => Promise<T>,
): Promise<T> {
  const scratch = await Scratch.map(tracer, pid, tid);
  let result: T;
  try {
    result = await fn(scratch);
  } catch (e) {
    await scratch.unmap().catch((u: unknown) => {
      throw new LazyRestoreError('DUMP_FAILED', `process ${pid}: cannot unmap the scratch page: ${String(u)}`, {
        pid,
        cause: e,
      });
    });
    throw e;
  }
  await scratch.unmap();
  return result;
}
