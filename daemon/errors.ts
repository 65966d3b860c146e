/**
 * The catalogue of lazyrestore's own error codes: one class, {@link LazyRestoreError}, told apart by a stable
 * `code` that the CLI prints and the REST API maps to an HTTP status. The image store keeps its own class
 * (daemon/store/errors.ts, `StoreError`); its codes are listed here too so one table answers "what status does
 * this code get".
 */

/** Codes of errors raised by dump (and, later, restore and the daemon), with the HTTP status the API gives them. */
export const ERROR_CODES = {
  /** The arguments make no sense (not a pid, a thread id instead of a process id, a bad option). */
  INVALID_ARGUMENT: 400,
  /** The pid names no process (or it exited before it could be frozen). */
  NO_SUCH_PROCESS: 404,
  /** The pid is a kernel thread: it has no user space to checkpoint. */
  KERNEL_THREAD: 422,
  /** The tree would contain the dumping process itself (its own pid or an ancestor of it). */
  DUMP_SELF: 422,
  /** A file descriptor restore cannot recreate (socket, anonymous inode, unlinked file, terminal, ...). */
  UNSUPPORTED_FD: 422,
  /** A memory mapping restore cannot recreate (hugetlb, SysV shm, memfd, unlinked file, device memory, ...). */
  UNSUPPORTED_MAPPING: 422,
  /** A process in a namespace other than the dumping process's own. */
  UNSUPPORTED_NAMESPACE: 422,
  /** A file a process depends on that restore cannot reopen (unlinked executable, cwd or root). */
  UNSUPPORTED_FILE: 422,
  /** A task in a state the dump cannot capture (traced by someone else, seccomp, in vfork(), ...). */
  UNSUPPORTED_TASK: 422,
  /** The tree could not be frozen (a task did not stop in time, or kept changing). */
  FREEZE_FAILED: 409,
  /** The data directory cannot be created, opened or written. */
  DATA_DIR_UNWRITABLE: 500,
  /** A dump failed for a reason of its own (the message says which); the tree was released unchanged. */
  DUMP_FAILED: 500,
  // Codes of restore (daemon/restore).
  /** A pid or tid of the image belongs to a live process or thread: nothing was created. */
  PID_IN_USE: 409,
  /** The image was dumped on another kernel (release, architecture, vDSO/vvar layout): it cannot run here. */
  IMAGE_INCOMPATIBLE: 422,
  /** A file the image refers to changed since the dump (another inode, size or device), or is gone. */
  FILE_CHANGED: 409,
  /** The image holds state this restore cannot recreate (the message names it). */
  UNSUPPORTED_IMAGE: 422,
  /** Lazy restore needs a userfaultfd feature this kernel lacks (the message names it); --eager still works. */
  LAZY_UNSUPPORTED: 422,
  /** The image maps hugetlb memory and this host has fewer free huge pages than it needs (nothing was created). */
  HUGE_PAGES_UNAVAILABLE: 503,
  /** A System V shared memory segment of the image cannot be recreated: its id or key belongs to another segment
   *  on this host (nothing was created). */
  IPC_ID_IN_USE: 409,
  /** A restore failed for a reason of its own (the message says which); every task it created was killed. */
  RESTORE_FAILED: 500,
  // Codes of the daemon's custody of uffds (daemon/custody).
  /** The keeper (or systemd's fd store) that keeps uffds across daemon restarts cannot be reached or started. */
  CUSTODY_UNAVAILABLE: 500,
  // Codes of StoreError (daemon/store/errors.ts), for the API's mapping.
  INVALID_IMAGE_NAME: 400,
  IMAGE_EXISTS: 409,
  IMAGE_NOT_FOUND: 404,
  CORRUPT_IMAGE: 500,
  CORRUPT_STORE: 500,
  STORE_LOCKED: 409,
  STORE_CLOSED: 503,
  STORE_OPEN_FAILED: 500,
  UNSUPPORTED_STORE_FORMAT: 500,
  WRITER_CLOSED: 500,
  WRITER_FAILED: 500,
  // Codes of the REST API (api/errors.ts) for failures that are about the request, not the operation.
  /** The request failed schema validation (the problem's `errors` name each field) or is not well-formed. */
  INVALID_REQUEST: 400,
  /** The TCP listener needs `Authorization: Bearer <token>` with the daemon's token. */
  UNAUTHORIZED: 401,
  /** No route has this method and path. */
  ROUTE_NOT_FOUND: 404,
  /** No job has this id (finished jobs are kept for a while only). */
  JOB_NOT_FOUND: 404,
  /** The request body is larger than the API accepts. */
  PAYLOAD_TOO_LARGE: 413,
  /** The request body is not JSON. */
  UNSUPPORTED_MEDIA_TYPE: 415,
  /** An unexpected failure inside the daemon; its log has the details (the response never does). */
  INTERNAL_ERROR: 500,
  /** The daemon is not ready (its store or page service is not running). */
  NOT_READY: 503,
  /** The daemon is shutting down and takes no new work. */
  SHUTTING_DOWN: 503,
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/** One reason a dump is refused: which process, which object (fd, mapping, namespace ...), and what it is. */
export interface Problem {
  code: ErrorCode;
  pid: number;
  /** 'fd 5', 'mapping 0x7f..-0x7f..', 'namespace net', 'tid 1234', ... */
  what: string;
  message: string;
}

export interface ErrorDetails {
  pid?: number;
  /** Every refusal found, when there were several (the error's code is that of the first). */
  problems?: Problem[];
  cause?: unknown;
}

export class LazyRestoreError extends Error {
  readonly code: ErrorCode;
  declare readonly pid?: number;
  declare readonly problems?: Problem[];

  constructor(code: ErrorCode, message: string, details: ErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'LazyRestoreError';
    this.code = code;
    if (details.pid !== undefined) this.pid = details.pid;
    if (details.problems !== undefined) this.problems = details.problems;
  }

  /** The HTTP status the API answers this error with. */
  get status(): number {
    return ERROR_CODES[this.code];
  }
}

export function isLazyRestoreError(e: unknown, code?: ErrorCode): e is LazyRestoreError {
  return e instanceof LazyRestoreError && (code === undefined || e.code === code);
}

/** The HTTP status for any error code (500 for codes outside the catalogue, errno names included). */
export function httpStatusOf(code: string): number {
  return Object.hasOwn(ERROR_CODES, code) ? ERROR_CODES[code as ErrorCode] : 500;
}

/** One error for a list of refusals: the first one's code, every message (up to `max`) in the text. */
export function refusal(problems: Problem[], max = 10): LazyRestoreError {
  const first = problems[0];
  if (first === undefined) throw new Error('refusal() needs at least one problem');
  const lines = problems.slice(0, max).map((p) => p.message);
  if (problems.length > max) lines.push(`... and ${problems.length - max} more`);
  const message = problems.length === 1 ? first.message : `cannot dump:\n  ${lines.join('\n  ')}`;
  return new LazyRestoreError(first.code, message, { pid: first.pid, problems });
}
