/**
 * The whole native surface of lazyrestore, typed in one place.
 *
 * The addon (native/src/*.cc, built by node-gyp into build/Release/lazyrestore.node)
 * exports flat functions; this module loads it and gives each one its type.
 * Conventions shared by every function:
 *  - Addresses and lengths are JS numbers (exact integers below 2^53). x86-64
 *    user space with 4-level paging ends at 2^47, so every address fits.
 *  - Raw kernel structures that hold arbitrary 64-bit values (registers, XSAVE
 *    areas) cross the boundary as Buffers, byte for byte as the kernel gives them.
 *  - Failures of syscalls throw (or reject with) a {@link SystemError}.
 *  - File descriptors returned by these functions belong to the caller, who
 *    closes them with {@link closeFd} (or hands them to an owner that says so).
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** An error from a syscall, shaped like Node's own system errors. */
export interface SystemError extends Error {
  /** errno name, e.g. 'EAGAIN'. */
  code: string;
  /** Negative errno, as Node reports it (e.g. -11 for EAGAIN). */
  errno: number;
  /** The failing syscall, e.g. 'ioctl' or 'ptrace'. */
  syscall: string;
  /** UFFDIO_COPY / UFFDIO_ZEROPAGE only: bytes handled before the failure. */
  bytesCopied?: number;
  /** UFFDIO_API only: the requested UFFD_FEATURE_* names the kernel lacks. */
  missingFeatures?: string[];
}

/** What shmctl(IPC_STAT) tells of a System V shared memory segment. */
export interface ShmStat {
  key: number;
  size: number;
  /** shm_perm.mode: permission bits plus SHM_DEST (0o1000) and SHM_LOCKED (0o2000). */
  mode: number;
  uid: number;
  gid: number;
  nattch: number;
}

export function isSystemError(e: unknown): e is SystemError {
  return (
    e instanceof Error && typeof (e as SystemError).code === 'string' && typeof (e as SystemError).errno === 'number'
  );
}

// ---------------------------------------------------------------------------
// userfaultfd (native/src/uffd.cc) — userfaultfd(2), ioctl_userfaultfd(2)
// ---------------------------------------------------------------------------

/** UFFD_FEATURE_* bit values, as in <linux/userfaultfd.h>. */
export const UFFD_FEATURES = {
  UFFD_FEATURE_PAGEFAULT_FLAG_WP: 1 << 0,
  UFFD_FEATURE_EVENT_FORK: 1 << 1,
  UFFD_FEATURE_EVENT_REMAP: 1 << 2,
  UFFD_FEATURE_EVENT_REMOVE: 1 << 3,
  UFFD_FEATURE_MISSING_HUGETLBFS: 1 << 4,
  UFFD_FEATURE_MISSING_SHMEM: 1 << 5,
  UFFD_FEATURE_EVENT_UNMAP: 1 << 6,
  UFFD_FEATURE_SIGBUS: 1 << 7,
  UFFD_FEATURE_THREAD_ID: 1 << 8,
  UFFD_FEATURE_MINOR_HUGETLBFS: 1 << 9,
  UFFD_FEATURE_MINOR_SHMEM: 1 << 10,
  UFFD_FEATURE_EXACT_ADDRESS: 1 << 11,
  UFFD_FEATURE_WP_HUGETLBFS_SHMEM: 1 << 12,
  UFFD_FEATURE_WP_UNPOPULATED: 1 << 13,
  UFFD_FEATURE_POISON: 1 << 14,
  UFFD_FEATURE_WP_ASYNC: 1 << 15,
  UFFD_FEATURE_MOVE: 1 << 16,
} as const;
export type UffdFeatureName = keyof typeof UFFD_FEATURES;

/** UFFDIO_REGISTER modes. */
export const UFFDIO_REGISTER_MODE_MISSING = 1;
export const UFFDIO_REGISTER_MODE_WP = 2;
export const UFFDIO_REGISTER_MODE_MINOR = 4;
/** UFFDIO_COPY mode bit: do not wake the faulting threads. */
export const UFFDIO_COPY_MODE_DONTWAKE = 1;

export interface UffdApiResult {
  /** Features the kernel granted (exactly the requested set on success). */
  features: number;
  /** Bitmask of ioctls usable on the uffd (1 << _UFFDIO_REGISTER, ...). Bits
   *  from 53 up cannot share a number with the low bits, so they are left out:
   *  that is only 1 << _UFFDIO_API (63), which the successful call implies. */
  ioctls: number;
}

export interface UffdProbe {
  /** Every feature bit the kernel offers (UFFDIO_API with features = 0). */
  features: number;
  /** As {@link UffdApiResult.ioctls} (bit 63, _UFFDIO_API, left out). */
  ioctls: number;
  /** How the probe obtained its uffd: 'syscall' or '/dev/userfaultfd'. */
  via: 'syscall' | '/dev/userfaultfd';
}

// ---------------------------------------------------------------------------
// Page service (native/src/page_service.cc): one epoll thread over many uffds
// ---------------------------------------------------------------------------

/** Opaque handle to a running page service (its own std::thread). */
export interface PageServiceHandle {
  readonly __brand: 'PageService';
}
/** Opaque handle to in-memory page data of one dumped address space, keyed by
 *  the address the data had at dump time ("origin"). Shared by every task
 *  restored from that address space and by their forked children. */
export interface PageSourceHandle {
  readonly __brand: 'PageSource';
}

/** Events the service reports to JavaScript (batched). Faults it can resolve
 *  itself never appear here; state changes from events are applied natively
 *  before they are reported. */
export type PageServiceEvent =
  /** A lazy page whose data is not in memory yet: the task waits until
   *  pageSourceProvide() supplies `origin` (reported once per page). */
  | { type: 'need'; task: number; address: number; origin: number; write: boolean; source: number; len: number }
  /** UFFD_EVENT_FORK: `child` is the new task id the service created for the
   *  child's uffd, with a copy of the parent's lazy state. */
  | { type: 'fork'; task: number; child: number }
  | { type: 'remap'; task: number; from: number; to: number; len: number }
  | { type: 'remove'; task: number; start: number; end: number }
  | { type: 'unmap'; task: number; start: number; end: number }
  /** Every lazy page of the task has been delivered; the service closed its uffd. `stats`: its final counters. */
  | { type: 'complete'; task: number; stats: PageServiceTaskStats }
  /** The task's address space is gone (exit, exec, kill); the service closed its uffd. `stats`: its final
   *  counters (lazyPages: pages it never received). */
  | { type: 'exit'; task: number; stats: PageServiceTaskStats }
  /** An unexpected failure for one task; the task's state is left as it was. */
  /** `fatal`: the service can no longer guarantee the task's memory (a REMOVE over lazy shared pages it could not
   *  attribute): kill the task. */
  | { type: 'error'; task: number; code: string; errno: number; syscall: string; message: string; fatal: boolean }
  /** pageServiceSync(token): every command posted before it has been applied. `task` is 0. */
  | { type: 'synced'; task: number; token: number };

/** Custody of a page service's uffds (native/src/page_service_custody.h): every task's fd is deposited with a
 *  custodian under `<prefix>-<task id>` and its lazy state journaled, so that a successor can take over. The
 *  service owns (and closes) the three fds. */
export interface PageServiceCustody {
  /** Journal file, opened O_WRONLY|O_APPEND. */
  journalFd: number;
  /** A file of at least 8 bytes: the id of the task whose uffd is being read, 0 otherwise. */
  markerFd: number;
  /** Connected socket of the custodian: the keeper (SOCK_SEQPACKET) or systemd's notify socket (SOCK_DGRAM). */
  sinkFd: number;
  mode: 'keeper' | 'systemd';
  prefix: string;
}

/** A change of a task's lazy state a journal recorded (a, b: from/to for remap, start/end otherwise); `punch` is
 *  a hole punched through its shared ranges (MADV_REMOVE, as the service told it from MADV_DONTNEED). */
export type LayoutChange = 'remap' | 'remove' | 'unmap' | 'punch';

/** One message of a unix socket, with the fd it carried (or null). */
export interface UnixMessage {
  text: string;
  fd: number | null;
}

export interface PageServiceTaskStats {
  task: number;
  /** Task id of the parent uffd for forked children, else null. */
  parent: number | null;
  /** The process whose memory the task serves; null when unknown (UFFD_EVENT_FORK names no pid). */
  pid: number | null;
  /** Lazy pages whose image data has not been delivered yet. */
  lazyPages: number;
  /** Page faults resolved (by copy or zero page). */
  faults: number;
  /** Pages placed by UFFDIO_COPY (faults, prefetch and background). */
  pagesCopied: number;
  /** Zero pages placed by UFFDIO_ZEROPAGE. */
  pagesZeroed: number;
  events: { fork: number; remap: number; remove: number; unmap: number };
}

export interface PageServiceTotals {
  /** Tasks the service has held: restored ones and forked children. */
  tasks: number;
  /** Lazy pages of the tasks it still holds. */
  lazyPages: number;
  faults: number;
  pagesCopied: number;
  pagesZeroed: number;
  events: { fork: number; remap: number; remove: number; unmap: number };
  /** Faults resolved at once, by time from reading the fault message to the ioctl returning: index 0 is under
   *  1 µs, index i in [2^(i-1), 2^i) µs, the last one anything longer. Faults that waited for data are not here. */
  faultLatencyUs: number[];
}

// ---------------------------------------------------------------------------
// ptrace on a dedicated tracer thread (native/src/ptrace.cc) — ptrace(2)
// ---------------------------------------------------------------------------

/** Opaque handle to a tracer: one std::thread that issues every ptrace request
 *  for the tasks it seized (ptrace is per thread). */
export interface TracerHandle {
  readonly __brand: 'Tracer';
}

export type WaitStatus =
  /** A ptrace stop. `event` is the PTRACE_EVENT_* number (0 for a plain
   *  signal-delivery stop, PTRACE_EVENT_STOP = 128 for group-stop/interrupt). */
  | { kind: 'stopped'; signal: number; event: number }
  | { kind: 'exited'; status: number }
  | { kind: 'signaled'; signal: number; coreDumped: boolean };

/** Size in bytes of struct user_regs_struct on x86-64 (27 registers). */
export const USER_REGS_SIZE = 27 * 8;

// ---------------------------------------------------------------------------
// The addon's flat functions
// ---------------------------------------------------------------------------

export interface NativeAddon {
  // --- uffd.cc
  /** userfaultfd(2) (falls back to /dev/userfaultfd's USERFAULTFD_IOC_NEW) in
   *  this process; flags are O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY bits. */
  uffdCreate(flags: number): number;
  /** Probe with a throw-away uffd and features = 0. */
  uffdProbe(): UffdProbe;
  /** UFFDIO_API requesting exactly `features`. On EINVAL the error names the
   *  missing bits in `missingFeatures` and in its message. Once per uffd. */
  uffdApi(fd: number, features: number): UffdApiResult;
  /** UFFDIO_REGISTER; returns the ioctls bitmask the range supports. */
  uffdRegister(fd: number, start: number, len: number, mode: number): number;
  uffdUnregister(fd: number, start: number, len: number): void;
  /** UFFDIO_COPY of `data` to `dst` in the uffd's mm. Returns bytes copied.
   *  Throws EAGAIN / EEXIST / ENOENT / ESRCH / ... with `bytesCopied` set. */
  uffdCopy(fd: number, dst: number, data: Buffer, mode: number): number;
  /** UFFDIO_ZEROPAGE; returns bytes zeroed; errors as uffdCopy. */
  uffdZeropage(fd: number, start: number, len: number, mode: number): number;
  uffdWake(fd: number, start: number, len: number): void;
  closeFd(fd: number): void;

  // --- page_service.cc
  pageServiceOpen(onEvents: (events: PageServiceEvent[]) => void, custody?: PageServiceCustody): PageServiceHandle;
  /** Adopt `uffd` (the service owns and closes it from now on) as a new task
   *  whose lazy ranges take data from `source`. Returns the task id. `pid`: the
   *  process of the uffd's mm, needed to tell MADV_DONTNEED from MADV_REMOVE on
   *  its shared ranges (0 or absent: unknown). `tag` (one line) is journaled
   *  with the adoption when the service has custody. `paused`: its uffd is not
   *  read until pageServiceResume (a successor replays the state first). */
  pageServiceAddTask(
    ps: PageServiceHandle,
    uffd: number,
    source: PageSourceHandle,
    pid?: number,
    tag?: string,
    paused?: boolean,
  ): number;
  /** A shared object (shmem: MAP_SHARED|MAP_ANONYMOUS, memfd) of `size` bytes
   *  whose data `source` holds by object offset; all its pages start lazy and
   *  are filled once, through whichever task faults or copies first. `tag` (one line) is journaled with it. */
  pageServiceAddSharedObject(ps: PageServiceHandle, source: PageSourceHandle, size: number, tag?: string): number;
  /** Replay a change a predecessor's journal recorded on `task`'s lazy state. */
  pageServiceApplyChange(
    ps: PageServiceHandle,
    task: number,
    kind: LayoutChange,
    a: number,
    b: number,
    len?: number,
  ): void;
  /** Start reading the uffd of a task added paused, then UFFDIO_WAKE over all of user space: threads waiting on
   *  faults a predecessor read fault again. */
  pageServiceResume(ps: PageServiceHandle, task: number): void;
  /** Append `text` (one line) to the journal, in command order. */
  pageServiceNote(ps: PageServiceHandle, text: string): void;
  /** Emit a `synced` event with `token` once every command posted before has been applied. */
  pageServiceSync(ps: PageServiceHandle, token: number): void;
  /** Declare [start, start+len) of `task` lazy: every page needs the data the
   *  source holds (or will hold) at origin + (addr - start). Origin pages the
   *  source never receives must be declared with pageSourceMarkZero first.
   *  With `object` (from pageServiceAddSharedObject), the range maps that
   *  object from offset `origin` and shares its lazy state. `unit`: the
   *  range's kernel page size (default 4096; a huge page size for hugetlb
   *  memory, which is faulted and copied a whole huge page at a time, and whose
   *  `need` events then ask for `len` = unit bytes from `origin`). */
  pageServiceAddLazyRange(
    ps: PageServiceHandle,
    task: number,
    start: number,
    len: number,
    origin: number,
    object?: number,
    unit?: number,
  ): void;
  /** Stop serving `task` and close its uffd. */
  pageServiceReleaseTask(ps: PageServiceHandle, task: number): void;
  /** Copy lazy pages whose data is in memory into the task in the background
   *  (between faults, in chunks of `chunkBytes`), until it is complete. */
  pageServiceSetBackground(ps: PageServiceHandle, task: number, enabled: boolean, chunkBytes: number): void;
  pageServiceStats(ps: PageServiceHandle): PageServiceTaskStats[];
  /** Totals over every task the service has held, gone or not, and the fault latency histogram. */
  pageServiceTotals(ps: PageServiceHandle): PageServiceTotals;
  /** Stop the thread. Uffds still held are closed only if `closeUffds`. */
  pageServiceClose(ps: PageServiceHandle, closeUffds: boolean): Promise<void>;

  pageSourceCreate(): PageSourceHandle;
  /** Copy `data` (a multiple of 4096 bytes) into the source at `origin`;
   *  parked faults on those pages are then served by the service thread. */
  pageSourceProvide(src: PageSourceHandle, origin: number, data: Buffer): void;
  /** Declare [origin, origin+len) as zero in the image (never stored). */
  pageSourceMarkZero(src: PageSourceHandle, origin: number, len: number): void;
  /** Bytes of page data the source holds. */
  pageSourceBytes(src: PageSourceHandle): number;
  /** The source's process-wide id (the `source` of `need` events). */
  pageSourceId(src: PageSourceHandle): number;

  // --- memfd.cc — memfd_create(2), fcntl(2) F_GET_SEALS
  /** memfd_create(name, flags | MFD_CLOEXEC) in this process. */
  memfdCreate(name: string, flags: number): number;
  /** F_GET_SEALS of `fd`, or -1 when the file cannot be sealed. */
  fileSeals(fd: number): number;

  // --- sysv_shm.cc — shmget(2), shmctl(2), shmop(2): System V shared memory segments
  /** shmget(key, size, flags); `key` is a signed 32-bit key_t (0 = IPC_PRIVATE). */
  shmGet(key: number, size: number, flags: number): number;
  /** IPC_STAT of segment `shmid`, or null when no segment has that id. */
  shmStat(shmid: number): ShmStat | null;
  /** IPC_SET: owner and permission bits (mode & 0o777). */
  shmSet(shmid: number, uid: number, gid: number, mode: number): void;
  /** IPC_RMID; false when no segment has that id any more. */
  shmRemove(shmid: number): boolean;
  /** SHM_LOCK. */
  shmLock(shmid: number): void;
  /** A read-write fd of the segment's shmem file (pread/pwrite reach its pages). */
  shmFile(shmid: number): number;

  // --- custody.cc: unix sockets carrying fds (SCM_RIGHTS); a path starting with '@' is abstract
  unixConnect(path: string, type: 'seqpacket' | 'dgram'): number;
  /** A SOCK_DGRAM socket bound at `path` (the receiving end of a notify socket). */
  unixBindDgram(path: string): number;
  /** One message; `passFd` (when given) travels with it. */
  unixSend(fd: number, text: string, passFd?: number | null): void;
  /** One message, waiting at most timeoutMs (ETIMEDOUT); null once the peer has closed. */
  unixRecv(fd: number, timeoutMs: number): UnixMessage | null;

  // --- ptrace.cc
  tracerOpen(): TracerHandle;
  tracerClose(t: TracerHandle): Promise<void>;
  /** PTRACE_SEIZE with the given PTRACE_O_* options. */
  tracerSeize(t: TracerHandle, tid: number, options: number): Promise<void>;
  /** PTRACE_INTERRUPT. */
  tracerInterrupt(t: TracerHandle, tid: number): Promise<void>;
  /** waitpid(tid, __WALL) on the tracer thread; rejects with ETIMEDOUT after
   *  timeoutMs (when given and > 0). */
  tracerWait(t: TracerHandle, tid: number, timeoutMs?: number): Promise<WaitStatus>;
  /** PTRACE_CONT with a signal to deliver (0 for none). */
  tracerCont(t: TracerHandle, tid: number, signal: number): Promise<void>;
  /** PTRACE_GETREGSET NT_PRSTATUS: struct user_regs_struct (incl. fs_base/gs_base). */
  tracerGetRegs(t: TracerHandle, tid: number): Promise<Buffer>;
  tracerSetRegs(t: TracerHandle, tid: number, regs: Buffer): Promise<void>;
  /** PTRACE_GETREGSET NT_X86_XSTATE: the full XSAVE area (FPU, SSE, AVX, ...). */
  tracerGetXstate(t: TracerHandle, tid: number): Promise<Buffer>;
  tracerSetXstate(t: TracerHandle, tid: number, xstate: Buffer): Promise<void>;
  /** PTRACE_GETSIGMASK / PTRACE_SETSIGMASK as a 64-bit mask in 8 bytes. */
  tracerGetSigmask(t: TracerHandle, tid: number): Promise<Buffer>;
  tracerSetSigmask(t: TracerHandle, tid: number, mask: Buffer): Promise<void>;
  /** Read/write tracee memory through /proc/<tid>/mem (works on read-only pages). */
  tracerReadMemory(t: TracerHandle, tid: number, address: number, length: number): Promise<Buffer>;
  tracerWriteMemory(t: TracerHandle, tid: number, address: number, data: Buffer): Promise<void>;
  /** Inject syscall `nr` with up to six arguments into a stopped tracee and
   *  return its raw result (negative errno on failure, as the kernel returns
   *  it; a bigint because results such as mmap addresses use all 64 bits).
   *  With `gadget`, the tracee runs `syscall; int3` at that address; without,
   *  the three bytes at the current rip are borrowed and put back. The tracee's
   *  registers are restored afterwards. */
  tracerSyscall(t: TracerHandle, tid: number, nr: number, args: bigint[], gadget?: number): Promise<bigint>;
  /** PTRACE_DETACH, delivering `signal` (0 for none). */
  tracerDetach(t: TracerHandle, tid: number, signal: number): Promise<void>;

  // --- pidfd.cc — pidfd_open(2), pidfd_getfd(2), pidfd_send_signal(2), process_vm_readv(2)
  pidfdOpen(pid: number, flags: number): number;
  pidfdGetfd(pidfd: number, targetFd: number): number;
  pidfdSendSignal(pidfd: number, signal: number): void;
  processVmRead(pid: number, address: number, length: number): Buffer;
  processVmWrite(pid: number, address: number, data: Buffer): number;
  /** kcmp(2) KCMP_FILE: 0 when both fds refer to the same open file description
   *  (shared offset and status flags), 1 or 2 to order different ones, 3 when
   *  they cannot be ordered. */
  kcmpFiles(pid1: number, fd1: number, pid2: number, fd2: number): number;

  // --- probe.cc — kernel capability probes for `lazyrestore check`
  /** clone3(2) with set_tid = a free pid chosen by the probe; the child exits
   *  at once. Returns the pid it obtained, or throws the clone3 error. */
  probeClone3SetTid(): number;
  /** Whether PTRACE_SEIZE + PTRACE_INTERRUPT work on a throw-away child. */
  probePtrace(): boolean;

  // --- ptrace_state.cc — ptrace(2) PTRACE_PEEKSIGINFO / PTRACE_GET_RSEQ_CONFIGURATION, tee(2)
  /** PTRACE_PEEKSIGINFO on the tracer thread: the siginfo_t (128 bytes each,
   *  concatenated, queue order) of the signals queued for thread `tid`, or for
   *  its whole thread group when `shared` (PTRACE_PEEKSIGINFO_SHARED); not dequeued. */
  tracerPeekSiginfo(t: TracerHandle, tid: number, shared: boolean): Promise<Buffer>;
  /** PTRACE_GET_RSEQ_CONFIGURATION on the tracer thread: struct
   *  ptrace_rseq_configuration (u64 rseq_abi_pointer, u32 rseq_abi_size,
   *  u32 signature, u32 flags, u32 pad); pointer 0 = no rseq registered. */
  tracerGetRseqConfiguration(t: TracerHandle, tid: number): Promise<Buffer>;
  /** The bytes buffered in the pipe whose read side `fd` (in this process) is,
   *  copied with tee(2) into a private pipe, so nothing is consumed; and the
   *  pipe's capacity (F_GETPIPE_SZ). Never blocks. */
  pipePeek(fd: number): { data: Buffer; capacity: number };

  // --- restore.cc — clone3(2) set_tid, ptrace(2), execve(2), waitid(2) P_PIDFD, pipe(2)
  /** On the tracer thread: clone3 (CLONE_VM|CLONE_VFORK, set_tid = `pid`)
   *  whose child does PTRACE_TRACEME and execs `helperPath` (the restorer);
   *  waits for its exec SIGTRAP stop, sets PTRACE_O_EXITKILL|TRACECLONE|
   *  TRACEFORK|TRACESYSGOOD and clears its signal mask. Resolves with the pid,
   *  a child of this process traced by the tracer thread. clone3 errors keep
   *  their errno (EEXIST: the pid is in use). */
  restoreSpawn(t: TracerHandle, helperPath: string, pid: number): Promise<number>;
  /** On the tracer thread: injects the encoded calls one after another
   *  through the `syscall; int3` gadget (see {@link RESTORE_CALL_BYTES}) and
   *  resolves with their raw results (one little-endian int64 each). Stops
   *  after the first call that returns -errno unless that call allows it, so
   *  fewer results than calls means the last one failed. */
  restoreInject(t: TracerHandle, tid: number, gadget: number, calls: Buffer): Promise<Buffer>;
  /** On the tracer thread: munmap(start, len) through the gadget under
   *  PTRACE_SYSCALL, leaving the task in its syscall-exit-stop (where the
   *  dumped registers are then set). Every signal must be blocked in the task. */
  restoreUnmapGadget(t: TracerHandle, tid: number, gadget: number, start: number, len: number): Promise<void>;
  /** On the tracer thread: PTRACE_DETACH of every tid with its signal, in one
   *  go; rejects with the first failure after trying them all. */
  restoreDetachAll(t: TracerHandle, tids: number[], signals: number[]): Promise<void>;
  /** Waits (on a thread of its own, without keeping Node alive) until child
   *  process `pid` exits, and reaps it with waitid(P_PIDFD). */
  restoreReap(pid: number): Promise<RestoreExit>;
  /** pipe2(O_CLOEXEC) in this process, with F_SETPIPE_SZ `capacity` unless 0.
   *  Returns [readFd, writeFd]. */
  restorePipe(capacity: number): [number, number];
}

/** How a reaped process ended. */
export type RestoreExit =
  | { pid: number; kind: 'exited'; status: number }
  | { pid: number; kind: 'signaled'; signal: number; coreDumped: boolean };

/** restoreInject call encoding: 16 little-endian int64 words per call —
 *  [nr, flags (bit 0: the call may fail), arg0..arg5, ref0..ref5, 0, 0]. A
 *  ref >= 0 adds the result of that earlier call (by index) to the argument. */
export const RESTORE_CALL_BYTES = 16 * 8;

/**
 * A file node-gyp built into build/Release at the package root: the addon, the restorer helper, the keeper.
 * This file runs from dist/native/index.js after the build, or from native/ in a checkout; null when not built.
 */
export function builtFile(name: string): string | null {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    const candidate = join(dir, 'build', 'Release', name);
    if (existsSync(candidate)) return candidate;
    dir = dirname(dir);
  }
  return null;
}

function loadAddon(): NativeAddon {
  const path = builtFile('lazyrestore.node');
  if (path === null) throw new Error('lazyrestore native addon is not built: run `npm run setup` (node-gyp rebuild)');
  return createRequire(import.meta.url)(path) as NativeAddon;
}

export const native: NativeAddon = loadAddon();

/** Names of the UFFD_FEATURE_* bits set in `features`, in bit order. */
export function uffdFeatureNames(features: number): UffdFeatureName[] {
  return (Object.keys(UFFD_FEATURES) as UffdFeatureName[]).filter((name) => (features & UFFD_FEATURES[name]) !== 0);
}
