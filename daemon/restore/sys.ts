/**
 * x86-64 syscall numbers and flag values the restore injects (<asm/unistd_64.h>, <linux/mman.h>, <linux/sched.h>,
 * <linux/prctl.h>, <linux/fcntl.h>); daemon/regs.ts holds the ones the dump shares.
 */
import { SYS as BASE } from '../regs.js';

export const SYS = {
  ...BASE,
  mremap: 25,
  shmat: 30,
  setfsuid: 122,
  setfsgid: 123,
  chroot: 161,
  mlock2: 325,
  close_range: 436,
  mseal: 462,
} as const;

export const PAGE = 4096;

export const PROT = { READ: 1, WRITE: 2, EXEC: 4 } as const;

export const MAP = {
  SHARED: 0x01,
  PRIVATE: 0x02,
  DROPPABLE: 0x08,
  FIXED: 0x10,
  ANONYMOUS: 0x20,
  GROWSDOWN: 0x0100,
  NORESERVE: 0x4000,
  HUGETLB: 0x40000,
  FIXED_NOREPLACE: 0x100000,
} as const;
/** MAP_HUGE_SHIFT: the log2 of the huge page size goes in bits 26-31 of the mmap flags. */
export const MAP_HUGE_SHIFT = 26;

/** memfd_create(2) flags; with MFD_HUGETLB the log2 of the huge page size goes at MFD_HUGE_SHIFT. */
export const MFD = { ALLOW_SEALING: 2, HUGETLB: 4 } as const;
export const MFD_HUGE_SHIFT = 26;

export const MREMAP_MAYMOVE = 1;
export const MREMAP_FIXED = 2;

export const MADV = {
  RANDOM: 1,
  SEQUENTIAL: 2,
  DONTFORK: 10,
  MERGEABLE: 12,
  HUGEPAGE: 14,
  NOHUGEPAGE: 15,
  DONTDUMP: 16,
  WIPEONFORK: 18,
} as const;

export const MLOCK_ONFAULT = 1;

export const CLONE = {
  VM: 0x100,
  FS: 0x200,
  FILES: 0x400,
  SIGHAND: 0x800,
  THREAD: 0x10000,
  SYSVSEM: 0x40000,
} as const;
/** sizeof(struct clone_args) with set_tid (CLONE_ARGS_SIZE_VER1). */
export const CLONE_ARGS_SIZE = 80;

export const PR = {
  SET_PDEATHSIG: 1,
  SET_DUMPABLE: 4,
  SET_KEEPCAPS: 8,
  SET_NAME: 15,
  SET_TIMERSLACK: 29,
  CAPBSET_DROP: 24,
  SET_MM: 35,
  SET_NO_NEW_PRIVS: 38,
  CAP_AMBIENT: 47,
  SET_VMA: 0x53564d41,
} as const;
export const PR_SET_MM_MAP = 14;
export const PR_CAP_AMBIENT_RAISE = 2;
export const PR_CAP_AMBIENT_CLEAR_ALL = 4;
export const PR_SET_VMA_ANON_NAME = 0;
/** sizeof(struct prctl_mm_map). */
export const PRCTL_MM_MAP_SIZE = 104;

export const F = {
  DUPFD_CLOEXEC: 1030,
  SETFD: 2,
  SETFL: 4,
} as const;
export const O_CLOEXEC = 0o2000000;
export const O_NONBLOCK = 0o4000;
export const O_NOCTTY = 0o400;
export const O_ACCMODE = 0o3;
export const UFFD_FLAGS = O_CLOEXEC | O_NONBLOCK;

export const SIGKILL = 9;
export const SIGSTOP = 19;
export const SIGCHLD = 17;
/** sizeof(struct kernel_sigaction) on x86-64: handler, flags, restorer, mask. */
export const KSIGACTION_SIZE = 32;
export const SIGSET_SIZE = 8;
export const SS_DISABLE = 2;
export const SS_AUTODISARM = 1 << 31;
export const RLIMIT_CORE = 4;
export const CAP_LAST = 40;

/** shmat(2) flags. */
export const SHM_RDONLY = 0o10000;
