/**
 * The process tree, created while every task is still a pristine restorer helper (clone3(2) with set_tid,
 * setsid(2), setpgid(2)): the root is started by the native spawn on the tracer thread; every other process is
 * an injected clone3 in its restored parent, so parents, sessions and groups are real. The children start at the
 * helper's int3 after the syscall, already traced (PTRACE_O_TRACEFORK).
 */
import { builtFile, isSystemError, native } from '../../native/index.js';
import { LazyRestoreError } from '../errors.js';
import { readStat, readStatus, signalsOf } from '../proc/index.js';
import { CLONE_ARGS_SIZE, KSIGACTION_SIZE, PR, SIGCHLD, SIGKILL, SIGSTOP, SIGSET_SIZE, SYS } from './sys.js';
import { HELPER_GADGET_OFFSET, type ProcTask, type RestoreContext } from './context.js';
import { openMem, tracerHandleOf, type Batch } from './inject.js';
import type { ImageProcess } from './image.js';

/** The timer slack of a fresh process (ns). The image does not record it; the tracer thread's is 1 ns. */
const DEFAULT_TIMERSLACK_NS = 50_000;
const STOP_TIMEOUT_MS = 10_000;

/** build/Release/lazyrestore-restorer at the package root (built by node-gyp with the addon). */
export function restorerPath(): string {
  const path = builtFile('lazyrestore-restorer');
  if (path !== null) return path;
  throw new LazyRestoreError(
    'RESTORE_FAILED',
    'the restorer helper is not built: run `npm run setup` (node-gyp rebuild)',
  );
}

function errnoCode(e: unknown): string | undefined {
  if (isSystemError(e)) return e.code;
  const cause = (e as { cause?: unknown }).cause;
  return isSystemError(cause) ? cause.code : undefined;
}

function pidInUse(pid: number, e: unknown): LazyRestoreError {
  return new LazyRestoreError('PID_IN_USE', `pid ${pid} was taken while the restore was creating it`, {
    pid,
    cause: e,
  });
}

function helperTask(ctx: RestoreContext, image: ImageProcess, gadget: number, scratchTop: number): ProcTask {
  const pid = image.entry.pid;
  const task: ProcTask = {
    pid,
    image,
    tids: [pid],
    gadget,
    // Below the helper's initial stack pointer, inside its stack mapping (132 KiB at exec).
    scratch: { start: scratchTop - 0x10000, size: 0xf000 },
    region: null,
    memFd: openMem(pid),
    serviceTask: null,
    restorerPidfd: null,
  };
  ctx.tasks.set(pid, task);
  return task;
}

/** The signals the helper ignores (inherited from this process across execve, e.g. SIGPIPE) go back to SIG_DFL. */
function resetIgnored(b: Batch, pid: number): void {
  const dfl = b.put(Buffer.alloc(KSIGACTION_SIZE));
  for (const sig of signalsOf(readStatus(pid).sigIgn)) {
    b.call(`rt_sigaction(${sig}, SIG_DFL)`, SYS.rt_sigaction, [sig, dfl, 0, SIGSET_SIZE]);
  }
}

/** Starts the root as a helper with the dumped pid, a child of this process traced by the tracer thread. */
export async function spawnRoot(ctx: RestoreContext): Promise<ProcTask> {
  const image = ctx.img.processes[0]!;
  const pid = image.entry.pid;
  try {
    await native.restoreSpawn(tracerHandleOf(ctx.tracer), restorerPath(), pid);
  } catch (e) {
    if (errnoCode(e) === 'EEXIST') throw pidInUse(pid, e);
    throw e;
  }
  const regs = await ctx.tracer.getRegs(pid);
  const task = helperTask(ctx, image, Number(regs.rip) + HELPER_GADGET_OFFSET, Number(regs.rsp & ~0xfffn));
  // Everything the children must not inherit goes first: our open fds (execve kept the ones without
  // O_CLOEXEC), ignored signals, our tracer thread's timer slack.
  const b = ctx.batch(task);
  resetIgnored(b, pid);
  b.call('close_range', SYS.close_range, [0, 0xffffffff, 0]);
  b.call('prctl(PR_SET_TIMERSLACK)', SYS.prctl, [PR.SET_TIMERSLACK, DEFAULT_TIMERSLACK_NS]);
  await b.run();
  await enterSession(ctx, task);
  return task;
}

/** A session leader of the tree calls setsid before it creates children; a group leader makes its group. */
async function enterSession(ctx: RestoreContext, task: ProcTask): Promise<void> {
  const { pid, sid, pgid } = task.image.entry;
  if (task.image.zombie) return;
  const b = ctx.batch(task);
  if (sid === pid) b.call('setsid', SYS.setsid);
  else if (pgid === pid) b.call('setpgid(0, 0)', SYS.setpgid, [0, 0]);
  await b.run();
}

/** Injects clone3(set_tid = pid) into the parent and waits for the child's first stop. */
async function cloneChild(ctx: RestoreContext, parent: ProcTask, image: ImageProcess): Promise<ProcTask> {
  const pid = image.entry.pid;
  const b = ctx.batch(parent);
  const setTid = Buffer.alloc(8);
  setTid.writeBigUInt64LE(BigInt(pid));
  const setTidAddr = b.put(setTid);
  const args = Buffer.alloc(CLONE_ARGS_SIZE);
  args.writeBigUInt64LE(BigInt(SIGCHLD), 32); // exit_signal (the image does not record another one)
  args.writeBigUInt64LE(BigInt(setTidAddr), 64); // set_tid
  args.writeBigUInt64LE(1n, 72); // set_tid_size
  b.call(`clone3(set_tid ${pid})`, SYS.clone3, [b.put(args), CLONE_ARGS_SIZE]);
  let child: bigint | undefined;
  try {
    [child] = await b.run();
  } catch (e) {
    if (errnoCode(e) === 'EEXIST') throw pidInUse(pid, e);
    throw e;
  }
  if (Number(child) !== pid)
    throw new LazyRestoreError('RESTORE_FAILED', `clone3 gave pid ${child}, not ${pid}`, { pid });
  // Recorded before the first wait, so a failure from here on kills it with the rest.
  const task = helperTask(ctx, image, parent.gadget, parent.scratch.start + 0x10000);
  await waitFirstStop(ctx, pid);
  return task;
}

/** A task auto-attached by PTRACE_O_TRACEFORK/TRACECLONE starts with a SIGSTOP signal-delivery-stop. */
export async function waitFirstStop(ctx: RestoreContext, tid: number): Promise<void> {
  const st = await ctx.tracer.wait(tid, STOP_TIMEOUT_MS);
  if (st.kind !== 'stopped' || st.signal !== SIGSTOP) {
    throw new LazyRestoreError('RESTORE_FAILED', `task ${tid} did not start as expected (${JSON.stringify(st)})`);
  }
}

/** Creates every process of the image below the root, then puts each in its dumped process group. */
export async function createTree(ctx: RestoreContext): Promise<void> {
  for (const image of ctx.img.processes.slice(1)) {
    const parent = ctx.task(image.entry.ppid);
    const task = await cloneChild(ctx, parent, image);
    await enterSession(ctx, task);
  }
  for (const task of ctx.tasks.values()) {
    const { pid, pgid } = task.image.entry;
    if (task.image.zombie || pgid === pid || !ctx.tasks.has(pgid)) continue;
    const b = ctx.batch(task);
    b.call(`setpgid(0, ${pgid})`, SYS.setpgid, [0, pgid]);
    await b.run();
  }
  for (const task of ctx.tasks.values()) noteOutsideSession(ctx, task);
}

/** Groups and sessions whose leader is not in the tree cannot be joined: the restorer's are used instead. */
function noteOutsideSession(ctx: RestoreContext, task: ProcTask): void {
  const { pid, pgid, sid } = task.image.entry;
  const now = readStat(pid);
  if (now.pgrp === pgid && now.session === sid) return;
  ctx.notes.push(
    `process ${pid}: dumped in process group ${pgid} and session ${sid}, whose leaders are not in the tree; ` +
      `restored in group ${now.pgrp} and session ${now.session}`,
  );
}

/**
 * A zombie of the image is recreated as a helper that exits with the dumped status when the tree is released,
 * so its parent can still reap it. Returns the registers that make it do so.
 */
export async function prepareZombie(ctx: RestoreContext, task: ProcTask): Promise<void> {
  const status = task.image.zombie?.exitCode ?? 0;
  const signal = status & 0x7f;
  const b = ctx.batch(task);
  if (signal !== 0) {
    // Dies of the same signal, without a core file.
    const rlim = b.put(Buffer.alloc(16));
    b.call('prlimit64(RLIMIT_CORE)', SYS.prlimit64, [0, 4, rlim, 0]);
  }
  await b.run();
  const regs = await ctx.tracer.getRegs(task.pid);
  regs.rip = BigInt(task.gadget);
  regs.orig_rax = -1n;
  if (signal !== 0) {
    regs.rax = BigInt(SYS.kill);
    regs.rdi = BigInt(task.pid);
    regs.rsi = BigInt(signal === SIGKILL ? SIGKILL : signal);
  } else {
    regs.rax = BigInt(SYS.exit_group);
    regs.rdi = BigInt((status >> 8) & 0xff);
  }
  await ctx.tracer.setRegs(task.pid, regs);
}
