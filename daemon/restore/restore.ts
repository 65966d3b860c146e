/**
 * `lazyrestore restore <image>`: brings a dumped tree back at once, its memory on demand (DESIGN.md §4).
 *
 *  1. load and check the image: same kernel and vDSO layout, every pid and tid free, nothing it holds that this
 *     restore cannot recreate; the restoring process opens (and checks) every file and creates every pipe;
 *  2. the tree, as pristine restorer helpers with the dumped pids, parents, sessions and groups (tree.ts);
 *  3. per process: memory layout and eager contents (memory.ts), process state (process.ts), threads and their
 *     state (threads.ts), its uffd handed to the page service (lazy.ts), credentials (creds.ts), pending signals,
 *     and the last step: our region unmapped, the dumped registers and masks set;
 *  4. every task released in one request; the root is reaped by this process when it exits.
 * System V segments the tree had attached are recreated first, unless they still exist (sysv.ts).
 * Any failure kills whatever was created (the helpers are traced with PTRACE_O_EXITKILL as well, so a crash of
 * this process kills them too), releases the uffds, and reports an error with a stable code.
 */
import { existsSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { native, type RestoreExit } from '../../native/index.js';
import { isStoreError, type ImageStore } from '../store/index.js';
import { Tracer } from '../tracer.js';
import { isLazyRestoreError, LazyRestoreError } from '../errors.js';
import { PageService } from '../page-service.js';
import { RestoreContext, type ProcTask } from './context.js';
import { NodeFiles } from './files.js';
import { checkCompatible, checkIdsFree, loadImageOrThrow } from './image.js';
import { closeMem, tracerHandleOf } from './inject.js';
import { checkLazySupported, LazySession, type LazyStats } from './lazy.js';
import {
  checkVmas,
  clearHelper,
  createShmem,
  enterRegion,
  finishVmas,
  mapVmas,
  checkHugePages,
  planLazyHuge,
  planLazyShmem,
  writeContents,
} from './memory.js';
import { checkProcesses, fdsAbove, openRestorerPidfd, restoreProcessState } from './process.js';
import { restoreCreds } from './creds.js';
import { createThreads, finishProcess, queuePending, restoreThreadState } from './threads.js';
import { createTree, prepareZombie, spawnRoot } from './tree.js';
import { createSysv, fillSysv, planSysv, removeCreated, removeDumpedRemoved } from './sysv.js';
import { SIGKILL, SIGSTOP } from './sys.js';

export interface RestoreOptions {
  /** Write all memory before the tree runs instead of serving it on demand. */
  eager?: boolean;
  /** A page service to hand the uffds to (the daemon's); by default the restore runs one and closes it once
   *  every task is complete. */
  pageService?: PageService;
  /** Background copy chunk (default 1 MiB). */
  backgroundChunkBytes?: number;
  /** Copy lazy pages in the background (default true). Without, pages arrive only when a task faults on them,
   *  and a task is complete only once it has touched all of them or exited (tests that need pages to stay lazy). */
  background?: boolean;
}

export interface RestoredProcess {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
  threads: number;
  state: 'running' | 'stopped' | 'zombie';
}

export interface RestoreCompletion {
  /** From the restore call until every task had all its memory (for --eager: when it started running). */
  completeMs: number;
  faultPages: number;
  backgroundPages: number;
  /** Page data that was already in memory from an earlier restore of the image. */
  cachedBytes: number;
  errors: string[];
}

export interface RestoredTree {
  name: string;
  imageId: string;
  rootPid: number;
  processes: RestoredProcess[];
  lazy: boolean;
  /** From the restore call until every task was released (running). */
  runningMs: number;
  /** Bytes written before the tree ran (all of its memory for --eager). */
  eagerBytes: number;
  /** Milliseconds until running, per step: load, files, tree, layout, contents, state, uffd, final, release. */
  phases: Record<string, number>;
  /** What was restored differently from the dump (groups and sessions outside the tree, external pipes). */
  notes: string[];
  /** Settles when every restored task has all its memory (or is gone); rejects if a feed failed (the tree is
   *  then killed). */
  complete: Promise<RestoreCompletion>;
  /** Settles when the root exits, reaped by this process. */
  exited: Promise<RestoreExit>;
}

const WAIT_GONE_MS = 5_000;
const PROC_GONE_MS = 10_000;

function errCode(e: unknown): string | undefined {
  return (e as { code?: string } | null)?.code;
}

function asRestoreError(e: unknown, name: string): unknown {
  if (isLazyRestoreError(e) || isStoreError(e)) return e;
  const message = e instanceof Error ? e.message : String(e);
  return new LazyRestoreError('RESTORE_FAILED', `restore of image ${name} failed: ${message}`, { cause: e });
}

/** Step 3 for one live process. Returns the bytes written before it runs. */
async function buildProcess(
  ctx: RestoreContext,
  task: ProcTask,
  files: NodeFiles,
  lazy: LazySession | null,
  phases: PhaseTimer,
): Promise<number> {
  const rec = task.image.record!;
  const helper = await enterRegion(ctx, task);
  await clearHelper(ctx, task, helper);
  const shmemBytes = await createShmem(ctx, task, files);
  const b = ctx.batch(task);
  const pidfd = openRestorerPidfd(b, fdsAbove(rec));
  mapVmas(b, task, files, pidfd, ctx.sysv);
  task.restorerPidfd = Number((await b.run())[pidfd.index]);
  phases.mark('layout');
  const bytes = shmemBytes + (await writeContents(ctx, task));
  const after = ctx.batch(task);
  finishVmas(after, task);
  await after.run();
  phases.mark('contents');
  await restoreProcessState(ctx, task, files);
  await createThreads(ctx, task);
  for (const t of task.image.threads) await restoreThreadState(ctx, task, t);
  phases.mark('state');
  if (lazy) await lazy.register(ctx, task);
  phases.mark('uffd');
  await restoreCreds(ctx, task);
  await queuePending(ctx, task);
  await finishProcess(ctx, task);
  phases.mark('final');
  return bytes;
}

/** Where the time until running goes, per step (milliseconds, summed over processes). */
class PhaseTimer {
  private last: number;
  readonly phases: Record<string, number> = {};

  constructor(t0: number) {
    this.last = t0;
  }

  mark(name: string): void {
    const now = performance.now();
    this.phases[name] = (this.phases[name] ?? 0) + now - this.last;
    this.last = now;
  }
}

async function waitGone(ctx: RestoreContext, tid: number): Promise<void> {
  for (;;) {
    let st;
    try {
      st = await ctx.tracer.wait(tid, WAIT_GONE_MS);
    } catch {
      return; // ECHILD/ESRCH: gone already; ETIMEDOUT: left to EXITKILL when the tracer closes
    }
    if (st.kind !== 'stopped') return;
    await ctx.tracer.cont(tid, 0).catch(() => undefined);
  }
}

/** Kills everything the restore created and waits until no pid of it is left. */
async function abort(ctx: RestoreContext, lazy: LazySession | null, files: NodeFiles): Promise<void> {
  lazy?.releaseAll();
  const tasks = [...ctx.tasks.values()].reverse();
  for (const t of tasks) {
    try {
      process.kill(t.pid, SIGKILL);
    } catch (e) {
      if (errCode(e) !== 'ESRCH') throw e;
    }
  }
  // A leader's exit is reported once its other threads are reaped; children go before their parents.
  for (const t of tasks) for (const tid of [...t.tids.slice(1), t.pid]) await waitGone(ctx, tid);
  await ctx.tracer.close();
  removeCreated(ctx.sysvCreated);
  files.closeAll();
  for (const t of tasks) closeMem(t.memFd);
  // Processes whose parent died before them are reaped by init: wait until every pid is really free.
  const deadline = Date.now() + PROC_GONE_MS;
  for (const t of tasks) {
    while (existsSync(`/proc/${t.pid}`) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  }
}

function describeProcesses(ctx: RestoreContext): RestoredProcess[] {
  return ctx.img.processes.map((p) => ({
    pid: p.entry.pid,
    ppid: p.entry.ppid,
    pgid: p.entry.pgid,
    sid: p.entry.sid,
    threads: p.threads.length,
    state: p.entry.state,
  }));
}

/** Restores image `name` from `store`; resolves once the whole tree runs. See the module comment. */
export async function restoreImage(
  store: ImageStore,
  name: string,
  options: RestoreOptions = {},
): Promise<RestoredTree> {
  const t0 = performance.now();
  const phases = new PhaseTimer(t0);
  const eager = options.eager === true;
  const img = await loadImageOrThrow(store, name);
  checkCompatible(img);
  checkVmas(img);
  checkProcesses(img);
  checkIdsFree(img);
  checkHugePages(img);
  if (!eager) checkLazySupported();
  const sysvNotes: string[] = [];
  const sysv = planSysv(img, eager, sysvNotes);
  phases.mark('load');
  const files = new NodeFiles();
  try {
    files.openAll(img);
  } catch (e) {
    files.closeAll();
    throw e;
  }
  phases.mark('files');
  const tracer = Tracer.open();
  const ctx = new RestoreContext(store, img, tracer, { eager });
  ctx.sysv = sysv;
  ctx.notes.push(...sysvNotes);
  const offered = eager ? 0 : native.uffdProbe().features;
  ctx.lazyShmem = planLazyShmem(img, eager, offered, ctx.notes);
  ctx.lazyHuge = planLazyHuge(img, eager, offered, ctx.notes);
  let lazy: LazySession | null = null;
  let eagerBytes = 0;
  let fatal: (e: unknown) => void = () => undefined;
  try {
    createSysv(ctx.sysv, ctx.sysvCreated);
    eagerBytes += await fillSysv(ctx);
    await spawnRoot(ctx);
    await createTree(ctx);
    phases.mark('tree');
    if (!eager) {
      const service = options.pageService ?? new PageService();
      lazy = new LazySession(
        store,
        img.id,
        service,
        options.pageService === undefined,
        t0,
        (e) => fatal(e),
        options.backgroundChunkBytes,
        options.background ?? true,
      );
    }
    for (const task of ctx.tasks.values()) {
      if (task.image.zombie) await prepareZombie(ctx, task);
      else eagerBytes += await buildProcess(ctx, task, files, lazy, phases);
    }
    removeDumpedRemoved(ctx.sysv);
    // The store failed to give a page the kernel needed meanwhile: the tree must not run on missing memory.
    if (lazy?.failure) throw asRestoreError(lazy.failure, name);
    const tids: number[] = [];
    const signals: number[] = [];
    for (const task of ctx.tasks.values()) {
      for (const tid of task.tids) {
        tids.push(tid);
        signals.push(tid === task.pid && task.image.entry.state === 'stopped' ? SIGSTOP : 0);
      }
    }
    // A task must not run before its uffd is in custody: a daemon crash would otherwise close the last copy.
    if (lazy) await lazy.custodyBarrier();
    await native.restoreDetachAll(tracerHandleOf(tracer), tids, signals);
    phases.mark('release');
  } catch (e) {
    await abort(ctx, lazy, files).catch(() => undefined);
    throw asRestoreError(e, name);
  }
  const runningMs = performance.now() - t0;
  files.closeAll();
  for (const t of ctx.tasks.values()) closeMem(t.memFd);
  const rootPid = img.image.rootPid;
  const exited = native.restoreReap(rootPid);
  exited.catch(() => undefined);
  const rootRecord = img.processes[0]!.record;
  // The tracer thread is the root's parent thread: a parent-death signal fires when that thread ends.
  if (rootRecord && rootRecord.pdeathsig !== 0) {
    ctx.notes.push(`process ${rootPid} has a parent-death signal: it is sent when this restoring process exits`);
    void exited.finally(() => tracer.close());
  } else {
    await tracer.close();
  }
  fatal = (e) => {
    for (const t of ctx.tasks.values()) {
      try {
        process.kill(t.pid, SIGKILL);
      } catch {
        // already gone
      }
    }
    void e;
  };
  let complete: Promise<RestoreCompletion>;
  if (lazy) {
    lazy.start();
    complete = lazy.completion.then((s: LazyStats) => ({
      completeMs: s.completeMs,
      faultPages: s.faultPages,
      backgroundPages: s.backgroundPages,
      cachedBytes: s.cachedBytes,
      errors: s.errors,
    }));
  } else {
    complete = Promise.resolve({
      completeMs: runningMs,
      faultPages: 0,
      backgroundPages: 0,
      cachedBytes: 0,
      errors: [],
    });
  }
  complete.catch(() => undefined);
  return {
    name: img.name,
    imageId: img.id,
    rootPid,
    processes: describeProcesses(ctx),
    lazy: lazy !== null,
    runningMs,
    eagerBytes,
    phases: phases.phases,
    notes: [...ctx.notes, ...files.notes],
    complete,
    exited,
  };
}
