/**
 * Batches of syscalls injected into a task being restored (ptrace(2) through native restoreInject): one tracer
 * request runs a whole batch, so a process is laid out in a handful of round trips instead of one per syscall.
 *
 * A call's argument may be the result of an earlier call of the same batch (plus an offset), which is how an fd
 * obtained with pidfd_getfd is handed to the mmap or dup3 that uses it. Data the syscalls read (paths, structs)
 * goes into the task's scratch area first: the batch collects it and writes it with one write to
 * /proc/<pid>/mem before the calls run.
 */
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { native, RESTORE_CALL_BYTES, type TracerHandle } from '../../native/index.js';
import { injectedSyscallError, syscallErrno, type Tracer } from '../tracer.js';
import { LazyRestoreError } from '../errors.js';

/** The result of an earlier call of the same batch, plus `plus`. */
export class Ref {
  constructor(
    readonly index: number,
    readonly plus = 0n,
  ) {}

  add(n: number | bigint): Ref {
    return new Ref(this.index, this.plus + BigInt(n));
  }
}

export type Arg = number | bigint | Ref;

interface PendingCall {
  name: string;
  nr: number;
  args: Arg[];
  allowFail: boolean;
}

/**
 * The native handle behind a Tracer, for the restore requests (restore.cc) that run on its thread. Tracer keeps
 * it in a TypeScript-private field, a plain property at run time; checked, so a rename fails loudly.
 */
export function tracerHandleOf(tracer: Tracer): TracerHandle {
  const handle = (tracer as unknown as { handle?: TracerHandle }).handle;
  if (handle === undefined) throw new Error('Tracer no longer exposes its native handle as `handle`');
  return handle;
}

/** Where a task executes injected syscalls, and where their input data may be written. */
export interface InjectTarget {
  pid: number;
  /** Address of a `syscall; int3` pair in the task. */
  gadget: number;
  /** Writable memory of the process that nothing else uses during the restore. */
  scratch: { start: number; size: number };
  /** An open /proc/<pid>/mem (read-write). */
  memFd: number;
}

/** Writes `data` at `address` of the process behind `memFd` (works on read-only mappings). */
export function writeMem(memFd: number, address: number, data: Buffer): void {
  let done = 0;
  while (done < data.length) done += writeSync(memFd, data, done, data.length - done, address + done);
}

export function readMem(memFd: number, address: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = readSync(memFd, out, done, length - done, address + done);
    if (n === 0) throw new Error(`short read of process memory at 0x${(address + done).toString(16)}`);
    done += n;
  }
  return out;
}

export function openMem(pid: number): number {
  return openSync(`/proc/${pid}/mem`, 'r+');
}

export function closeMem(fd: number): void {
  closeSync(fd);
}

function encodeArg(a: Arg | undefined): [bigint, bigint] {
  if (a === undefined) return [0n, -1n];
  if (a instanceof Ref) return [a.plus, BigInt(a.index)];
  if (typeof a === 'number') {
    if (!Number.isSafeInteger(a)) throw new RangeError(`syscall argument ${a} is not a safe integer`);
    return [BigInt(a), -1n];
  }
  return [a, -1n];
}

export class Batch {
  private readonly calls: PendingCall[] = [];
  private readonly data: Buffer;
  private used = 0;

  constructor(
    private readonly tracer: Tracer,
    private readonly target: InjectTarget,
    private readonly tid = target.pid,
  ) {
    this.data = Buffer.alloc(target.scratch.size);
  }

  get length(): number {
    return this.calls.length;
  }

  /** Queues syscall `nr`; `name` names it in errors. Returns a reference to its result. */
  call(name: string, nr: number, args: Arg[] = [], options: { allowFail?: boolean } = {}): Ref {
    if (args.length > 6) throw new RangeError(`${name}: a syscall takes at most 6 arguments`);
    this.calls.push({ name, nr, args, allowFail: options.allowFail === true });
    return new Ref(this.calls.length - 1);
  }

  /** Copies `bytes` into the scratch area (8-byte aligned); returns its address in the task. */
  put(bytes: Buffer): number {
    const off = (this.used + 7) & ~7;
    if (off + bytes.length > this.data.length) {
      throw new LazyRestoreError(
        'RESTORE_FAILED',
        `process ${this.target.pid}: scratch area of ${this.data.length} bytes is full`,
      );
    }
    bytes.copy(this.data, off);
    this.used = off + bytes.length;
    return this.target.scratch.start + off;
  }

  /** A NUL-terminated string in the scratch area. */
  putString(s: string): number {
    return this.put(Buffer.from(s + '\0'));
  }

  /** Room for `length` bytes the kernel writes (zeroed first); read it back with {@link Batch.read}. */
  reserve(length: number): number {
    return this.put(Buffer.alloc(length));
  }

  read(address: number, length: number): Buffer {
    return readMem(this.target.memFd, address, length);
  }

  /** Runs every queued call; throws (naming the call) at the first failure that was not allowed. */
  async run(): Promise<bigint[]> {
    if (this.calls.length === 0) return [];
    if (this.used > 0) writeMem(this.target.memFd, this.target.scratch.start, this.data.subarray(0, this.used));
    const buf = Buffer.alloc(this.calls.length * RESTORE_CALL_BYTES);
    this.calls.forEach((c, i) => {
      const o = i * RESTORE_CALL_BYTES;
      buf.writeBigInt64LE(BigInt(c.nr), o);
      buf.writeBigInt64LE(c.allowFail ? 1n : 0n, o + 8);
      for (let a = 0; a < 6; a++) {
        const [value, ref] = encodeArg(c.args[a]);
        buf.writeBigInt64LE(BigInt.asIntN(64, value), o + 16 + a * 8);
        buf.writeBigInt64LE(ref, o + 64 + a * 8);
      }
    });
    const out = await native.restoreInject(tracerHandleOf(this.tracer), this.tid, this.target.gadget, buf);
    const results: bigint[] = [];
    for (let off = 0; off < out.length; off += 8) results.push(out.readBigInt64LE(off));
    const last = results.length - 1;
    const failed = this.calls[last];
    if (results.length < this.calls.length || (failed && !failed.allowFail && syscallErrno(results[last]!) !== 0)) {
      const errno = syscallErrno(results[last] ?? -5n);
      const cause = injectedSyscallError(failed?.name ?? 'syscall', this.tid, errno);
      throw new LazyRestoreError('RESTORE_FAILED', `process ${this.target.pid}: ${cause.message}`, {
        pid: this.target.pid,
        cause,
      });
    }
    this.calls.length = 0;
    this.used = 0;
    return results;
  }
}
