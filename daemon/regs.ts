/**
 * x86-64 register file and syscall numbers for the tracer.
 *
 * `struct user_regs_struct` (<sys/user.h>) is what PTRACE_GETREGSET
 * NT_PRSTATUS returns: 27 unsigned 64-bit little-endian fields, fs_base and
 * gs_base included. Registers are read as unsigned bigints (use
 * {@link Regs.signed} for values such as a syscall result in rax) and written
 * from any bigint in [-2^63, 2^64), negatives as two's complement.
 */
import { USER_REGS_SIZE } from '../native/index.js';

/** Byte offset of each field in struct user_regs_struct, in declaration order. */
export const REG_OFFSETS = {
  r15: 0,
  r14: 8,
  r13: 16,
  r12: 24,
  rbp: 32,
  rbx: 40,
  r11: 48,
  r10: 56,
  r9: 64,
  r8: 72,
  rax: 80,
  rcx: 88,
  rdx: 96,
  rsi: 104,
  rdi: 112,
  orig_rax: 120,
  rip: 128,
  cs: 136,
  eflags: 144,
  rsp: 152,
  ss: 160,
  fs_base: 168,
  gs_base: 176,
  ds: 184,
  es: 192,
  fs: 200,
  gs: 208,
} as const;

export type RegName = keyof typeof REG_OFFSETS;
export const REG_NAMES = Object.keys(REG_OFFSETS) as RegName[];

function checkSize(regs: Buffer): void {
  if (regs.length !== USER_REGS_SIZE)
    throw new RangeError(`user_regs_struct is ${USER_REGS_SIZE} bytes, got ${regs.length}`);
}

/** The unsigned 64-bit value of register `name` in a user_regs_struct buffer. */
export function getReg(regs: Buffer, name: RegName): bigint {
  checkSize(regs);
  return regs.readBigUInt64LE(REG_OFFSETS[name]);
}

/** Writes `value` (two's complement for negatives) into register `name`. */
export function setReg(regs: Buffer, name: RegName, value: bigint): void {
  checkSize(regs);
  if (value < -(1n << 63n) || value >= 1n << 64n) throw new RangeError(`${name}: ${value} does not fit in 64 bits`);
  regs.writeBigUInt64LE(BigInt.asUintN(64, value), REG_OFFSETS[name]);
}

type RegisterFields = { [K in RegName]: bigint };

/** Named accessors over a user_regs_struct Buffer (shared, not copied):
 *  `regs.rip`, `regs.rsp = 0x7ffd0000n`, ... */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type, @typescript-eslint/no-unsafe-declaration-merging
export interface Regs extends RegisterFields {}
// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging
export class Regs {
  readonly buffer: Buffer;

  constructor(buffer: Buffer = Buffer.alloc(USER_REGS_SIZE)) {
    checkSize(buffer);
    this.buffer = buffer;
  }

  /** The register read as a signed 64-bit value. */
  signed(name: RegName): bigint {
    return BigInt.asIntN(64, getReg(this.buffer, name));
  }

  /** An independent copy. */
  clone(): Regs {
    return new Regs(Buffer.from(this.buffer));
  }
}

for (const name of REG_NAMES) {
  Object.defineProperty(Regs.prototype, name, {
    get(this: Regs): bigint {
      return getReg(this.buffer, name);
    },
    set(this: Regs, value: bigint) {
      setReg(this.buffer, name, value);
    },
    enumerable: true,
  });
}

/** x86-64 syscall numbers, from <asm/unistd_64.h>. */
export const SYS = {
  close: 3,
  lseek: 8,
  mmap: 9,
  mprotect: 10,
  munmap: 11,
  brk: 12,
  rt_sigaction: 13,
  rt_sigprocmask: 14,
  ioctl: 16,
  madvise: 28,
  dup2: 33,
  getpid: 39,
  exit: 60,
  wait4: 61,
  kill: 62,
  fcntl: 72,
  ftruncate: 77,
  chdir: 80,
  fchdir: 81,
  umask: 95,
  setpgid: 109,
  setsid: 112,
  setgroups: 116,
  setresuid: 117,
  setresgid: 119,
  getpgid: 121,
  getsid: 124,
  capget: 125,
  capset: 126,
  rt_sigpending: 127,
  rt_sigqueueinfo: 129,
  sigaltstack: 131,
  personality: 135,
  mlock: 149,
  munlock: 150,
  prctl: 157,
  arch_prctl: 158,
  gettid: 186,
  sched_setaffinity: 203,
  set_tid_address: 218,
  exit_group: 231,
  tgkill: 234,
  openat: 257,
  set_robust_list: 273,
  get_robust_list: 274,
  timerfd_create: 283,
  dup3: 292,
  pipe2: 293,
  rt_tgsigqueueinfo: 297,
  prlimit64: 302,
  memfd_create: 319,
  userfaultfd: 323,
  rseq: 334,
  pidfd_open: 434,
  clone3: 435,
  pidfd_getfd: 438,
} as const;

export type SyscallName = keyof typeof SYS;
