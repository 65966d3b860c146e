/**
 * The records of an image (docs/image-format.md, version 1) and how a dump writes them: the shapes below are
 * the contract with restore. 64-bit masks are `0x` hex strings, rlimits decimal strings, raw kernel structures
 * base64; addresses and lengths are plain numbers.
 */
import type { ImageWriter } from '../store/index.js';

export const IMAGE_FORMAT = 1;

export interface ImageRecord {
  format: number;
  createdAt: string;
  tool: string;
  kernel: { release: string; arch: string };
  pageSize: number;
  rootPid: number;
  /** Sizes of the kernel's special mappings as the dumped tree had them; restore refuses on a mismatch. */
  vdso: Array<{ name: string; size: number }>;
  /** How long the tree was frozen, in milliseconds. */
  frozenMs: number;
}

export type ProcessState = 'running' | 'stopped' | 'zombie';

export interface TreeEntry {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
  /** Thread ids, leader first (only the leader for a zombie). */
  tids: number[];
  state: ProcessState;
}

export interface TreeRecord {
  processes: TreeEntry[];
}

export interface MmRecord {
  startCode: number;
  endCode: number;
  startData: number;
  endData: number;
  startBrk: number;
  brk: number;
  startStack: number;
  argStart: number;
  argEnd: number;
  envStart: number;
  envEnd: number;
  /** /proc/<pid>/auxv, base64. */
  auxv: string;
}

export interface CredsRecord {
  uid: [number, number, number, number];
  gid: [number, number, number, number];
  groups: number[];
  caps: { inh: string; prm: string; eff: string; bnd: string; amb: string };
  noNewPrivs: boolean;
}

export interface RlimitRecord {
  resource: number;
  soft: string;
  hard: string;
}

export interface SigactionRecord {
  signo: number;
  /** Address of the handler, or 0 (SIG_DFL) / 1 (SIG_IGN). */
  handler: number;
  /** sa_flags, 0x hex (SA_RESTORER, SA_SIGINFO, ...). */
  flags: string;
  restorer: number;
  /** sa_mask, 0x hex (bit n-1 = signal n). */
  mask: string;
}

export type VmaContent = 'anon' | 'file' | 'shmem' | 'vdso' | 'vvar' | 'vvar_vclock';

export interface VmaRecord {
  start: number;
  end: number;
  /** PROT_* bits: 1 read, 2 write, 4 exec. */
  prot: number;
  shared: boolean;
  growsDown: boolean;
  /** What /proc/<pid>/maps says the mapping is: anon, heap, stack, file, shmem, vdso, vvar, vvar_vclock. */
  kind: string;
  /** Offset into the file, or into the shared object, in bytes. */
  offset: number;
  file?: { path: string; dev: number; ino: number; size: number };
  shmem?: string;
  content: VmaContent;
  /** VmFlags mnemonics of /proc/<pid>/smaps that restore reproduces (lo, lf, dc, wf, dd, hg, nh, mg, sr, rr, nr, dp, sl, ...), plus the access limits (mr, mw, me). */
  vmFlags: string[];
  /** [anon:<name>] set with PR_SET_VMA_ANON_NAME, else absent. */
  anonName?: string;
  /** Hugetlb memory (private anonymous MAP_HUGETLB memory, or a mapping of a shared hugetlb object): its huge page
   *  size in bytes (2 MiB); absent otherwise. */
  hugePageSize?: number;
}

export interface FdBase {
  fd: number;
  cloexec: boolean;
  /** Open flags without O_CLOEXEC (octal in fdinfo; O_APPEND and the access mode among them). */
  flags: number;
  pos: number;
  /** Shared by every fd of the tree that refers to the same open file description (kcmp KCMP_FILE); absent when unshared. */
  description?: string;
}

export type FdRecord = FdBase &
  (
    | { kind: 'file'; path: string; dev: number; ino: number; size: number }
    | { kind: 'directory'; path: string }
    | { kind: 'pipe'; pipe: string; end: 'read' | 'write' }
    | { kind: 'fifo'; path: string; pipe: string }
    | { kind: 'chardev'; path: string; rdev: [number, number] }
  );

export interface ProcessRecord {
  pid: number;
  comm: string;
  exe: { path: string; dev: number; ino: number };
  cwd: string;
  root: string;
  umask: number;
  personality: number;
  /** Parent-death signal of the thread-group leader (prctl(PR_GET_PDEATHSIG)), 0 for none. */
  pdeathsig: number;
  mm: MmRecord;
  creds: CredsRecord;
  rlimits: RlimitRecord[];
  sigactions: SigactionRecord[];
  /** Process-wide pending signals (PTRACE_PEEKSIGINFO_SHARED), each a siginfo_t in base64. */
  sharedPending: string[];
  vmas: VmaRecord[];
  fds: FdRecord[];
}

/** The process record of a zombie: it has no memory, files or threads left, only its exit status. */
export interface ZombieRecord {
  pid: number;
  comm: string;
  /** Exit status as waitpid(2) would report it (field 52 of /proc/<pid>/stat). */
  exitCode: number;
  zombie: true;
}

export interface ThreadRecord {
  tid: number;
  pid: number;
  /** user_regs_struct, base64, with the syscall-restart fix-up applied. */
  regs: string;
  /** The XSAVE area, base64. */
  xstate: string;
  /** Blocked signals, 0x hex. */
  sigmask: string;
  /** Thread-private pending signals (PTRACE_PEEKSIGINFO), each a siginfo_t in base64. */
  pending: string[];
  sigaltstack: { sp: number; flags: number; size: number };
  rseq: { ptr: number; len: number; sig: number } | null;
  robustList: { head: number; len: number };
  clearChildTid: number;
  /** The thread was stopped by a stop signal (group-stop) rather than frozen while running. */
  groupStopped: boolean;
}

export interface PipeRecord {
  id: string;
  /** The bytes buffered in the pipe at dump time (base64), read without consuming them. */
  data: string;
  /** Pipe capacity in bytes (F_GETPIPE_SZ). */
  size: number;
  /** For a FIFO: its path, device and inode. */
  fifo?: { path: string; dev: number; ino: number };
  /**
   * Processes outside the tree that held this pipe at dump time: the restored tree gets a new pipe whose
   * other end is the caller's to provide (see docs/image-format.md, external pipes). Absent when none.
   */
  externalPids?: number[];
}

export interface ShmemRecord {
  id: string;
  /** Size of the object (st_size of the shmem file), bytes. */
  size: number;
  /** `memfd`: a memfd_create(2) file; `sysv`: a System V segment (shmget(2)); absent or `anon`:
   *  MAP_SHARED|MAP_ANONYMOUS memory. */
  kind?: 'anon' | 'memfd' | 'sysv';
  /** memfd only: its name (without the `memfd:` prefix) and F_GET_SEALS (1: not sealable, 0: sealable, no seal). */
  name?: string;
  seals?: number;
  /** sysv only: the segment as /proc/sysvipc/shm showed it. */
  sysv?: SysvShmRecord;
  /** A hugetlbfs object (MAP_SHARED|MAP_ANONYMOUS|MAP_HUGETLB memory, an MFD_HUGETLB memfd): its huge page size in
   *  bytes (2 MiB); absent for shmem. */
  hugePageSize?: number;
}

/** A System V shared memory segment the tree had attached. */
export interface SysvShmRecord {
  /** key_t, signed; 0 is IPC_PRIVATE (and the key of every segment already removed). */
  key: number;
  shmid: number;
  /** Permission bits (shm_perm.mode & 0o777). */
  mode: number;
  uid: number;
  gid: number;
  /** Removed with IPC_RMID (SHM_DEST): it goes when its last attach does. */
  removed: boolean;
  /** SHM_LOCK was applied (SHM_LOCKED). */
  locked: boolean;
}

/** Everything a dump writes besides page data. */
export interface ImageMetadata {
  image: ImageRecord;
  tree: TreeRecord;
  processes: Array<ProcessRecord | ZombieRecord>;
  threads: ThreadRecord[];
  pipes: PipeRecord[];
  shmem: ShmemRecord[];
}

export function hex64(v: bigint): string {
  return '0x' + BigInt.asUintN(64, v).toString(16);
}

export function base64(b: Buffer): string {
  return b.toString('base64');
}

/** The mmId of the private memory of process `pid` in the page store. */
export function mmIdOf(pid: number): string {
  return `mm:${pid}`;
}

/** The mmId of shared anonymous object `id`. */
export function shmemMmId(id: string): string {
  return `shmem:${id}`;
}

/** Hands every metadata record to the writer under its key (docs/image-format.md, "Metadata keys"). */
export function putImageMetadata(writer: ImageWriter, meta: ImageMetadata): void {
  writer.putMeta('image', meta.image);
  writer.putMeta('tree', meta.tree);
  for (const p of meta.processes) writer.putMeta(`process/${p.pid}`, p);
  for (const t of meta.threads) writer.putMeta(`thread/${t.tid}`, t);
  for (const p of meta.pipes) writer.putMeta(`pipe/${p.id}`, p);
  for (const s of meta.shmem) writer.putMeta(`shmem/${s.id}`, s);
}
