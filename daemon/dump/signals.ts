/**
 * Signal state of a frozen tree (signal(7), sigaction(2), ptrace(2) PTRACE_PEEKSIGINFO): which signals have a
 * disposition other than the default, and the queued siginfo of pending signals, per thread and process-wide.
 */
import { native, type TracerHandle } from '../../native/index.js';
import type { ProcStatus } from '../proc/index.js';
import { signalsOf } from '../proc/index.js';
import type { Tracer } from '../tracer.js';
import { base64 } from './image.js';

/** sizeof(siginfo_t) on Linux. */
export const SIGINFO_SIZE = 128;
const SIGKILL = 9;
const SIGSTOP = 19;

/**
 * Signals whose disposition is not SIG_DFL: caught (SigCgt) or ignored (SigIgn) in /proc/<pid>/status.
 * SIGKILL and SIGSTOP can have no other disposition and are never asked for.
 */
export function nonDefaultSignals(status: ProcStatus): number[] {
  return signalsOf(status.sigCgt | status.sigIgn).filter((s) => s !== SIGKILL && s !== SIGSTOP);
}

/** Splits the concatenated siginfo_t structures PTRACE_PEEKSIGINFO returned into base64 records. */
export function splitSiginfo(buf: Buffer): string[] {
  if (buf.length % SIGINFO_SIZE !== 0) throw new Error(`siginfo buffer of ${buf.length} bytes is not whole records`);
  const out: string[] = [];
  for (let off = 0; off < buf.length; off += SIGINFO_SIZE) out.push(base64(buf.subarray(off, off + SIGINFO_SIZE)));
  return out;
}

/**
 * The native handle behind a Tracer, for the requests of ptrace_state.cc that must run on its thread. Tracer
 * keeps it in a TypeScript-private field (a plain property at run time); checked, so a rename fails loudly.
 */
export function tracerHandle(tracer: Tracer): TracerHandle {
  const handle = (tracer as unknown as { handle?: TracerHandle }).handle;
  if (handle === undefined) throw new Error('Tracer no longer exposes its native handle as `handle`');
  return handle;
}

/** Queued signals of thread `tid` (its private queue), or of its whole process when `shared`. */
export async function pendingSignals(tracer: Tracer, tid: number, shared: boolean): Promise<string[]> {
  return splitSiginfo(await native.tracerPeekSiginfo(tracerHandle(tracer), tid, shared));
}
