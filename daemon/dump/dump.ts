/**
 * `lazyrestore dump`: checkpoint a running process tree into the image store.
 *
 *  1. preflight on the live tree (refusals, nothing frozen, nothing written);
 *  2. reserve the image name (beginImage: invisible until commit);
 *  3. freeze every task of the tree (freeze.ts);
 *  4. read what /proc says about the frozen tree and check it again — the frozen tree is the one that counts;
 *  5. ask each task what only it can say (inject.ts: signal handlers, alternate stacks, robust lists, ...),
 *     then per thread registers, FPU state, masks and pending signals (threads.ts);
 *  6. read the memory: with --leave-running all of it into memory, release the tree, then write; otherwise
 *     stream it into the store while the tree stays frozen;
 *  7. commit, then kill the tree (or it is already running again).
 * Any failure before the commit aborts the writer (nothing becomes visible) and releases the tree exactly as
 * it was.
 */
import { release as osRelease, machine } from 'node:os';
import { performance } from 'node:perf_hooks';
import { isNoSuchProcess, PagemapFile, readComm, readFds, readSmaps, readStat } from '../proc/index.js';
import { isStoreError, type ImageStore, type ImageSummary, type ImageWriter } from '../store/index.js';
import { Tracer } from '../tracer.js';
import { isLazyRestoreError, LazyRestoreError, refusal, type Problem } from '../errors.js';
import { defaultImageName } from './defaults.js';
import { assignDescriptions } from './descriptions.js';
import { checkLinks, collectPipes, describeFds, type PipeRef } from './files.js';
import { Freezer, type FrozenProcess } from './freeze.js';
import {
  IMAGE_FORMAT,
  mmIdOf,
  putImageMetadata,
  shmemMmId,
  type ImageMetadata,
  type ProcessRecord,
  type ThreadRecord,
  type TreeEntry,
  type ZombieRecord,
} from './image.js';
import { withScratch } from './inject.js';
import {
  PagePool,
  planMemory,
  READ_PAGES,
  readPrivatePages,
  readShmemPages,
  shmemRecord,
  type Allocator,
  type MemoryPlan,
  type PagePiece,
  type ShmemRef,
} from './memory.js';
import { preflight } from './preflight.js';
import { checkProcess, checkThreadCreds, processRecord, readProcessFacts, type ProcessFacts } from './process.js';
import { nonDefaultSignals, pendingSignals } from './signals.js';
import { readThread } from './threads.js';

export type DumpPhase = 'freezing' | 'collecting' | 'reading' | 'releasing' | 'writing' | 'committing' | 'killing';

export interface DumpProgress {
  phase: DumpPhase;
  /** Pages the dump will hand to the store (known once the tree is frozen), and how many it has so far. */
  pagesTotal: number;
  pagesRead: number;
  pagesWritten: number;
}

export interface DumpOptions {
  /** Image name; default `<comm>-<pid>-<yyyymmddThhmmss>`. */
  name?: string;
  /** Resume the tree after the dump instead of killing it. */
  leaveRunning?: boolean;
  /** How long one task may take to stop. */
  freezeTimeoutMs?: number;
  onProgress?: (p: DumpProgress) => void;
}

export interface DumpResult {
  name: string;
  id: string;
  rootPid: number;
  processes: number;
  threads: number;
  vmas: number;
  /** Pages handed to the store (present pages, zero or not) and the page data the image holds (non-zero). */
  pagesDumped: number;
  bytes: number;
  /** Page data this dump added to the store; the rest was already there (or repeated within the image). */
  bytesStored: number;
  /** bytes / bytesStored: 1 when nothing was shared; null when the image added no page data at all. */
  dedupRatio: number | null;
  /** From the first PTRACE_SEIZE to the release (or the kill) of the last task. */
  frozenMs: number;
  /** The whole dump, preflight to commit. */
  totalMs: number;
  /** Store writes that ran after the tree was released (--leave-running). */
  writeAfterReleaseMs: number;
  leftRunning: boolean;
  summary: ImageSummary;
}

interface Collected {
  meta: Omit<ImageMetadata, 'image'>;
  plans: MemoryPlan[];
  shmem: ShmemRef[];
  vdso: Array<{ name: string; size: number }>;
  vmas: number;
}

class Progress {
  readonly p: DumpProgress = { phase: 'freezing', pagesTotal: 0, pagesRead: 0, pagesWritten: 0 };
  constructor(private readonly fn: ((p: DumpProgress) => void) | undefined) {}
  set(changes: Partial<DumpProgress>): void {
    Object.assign(this.p, changes);
    this.fn?.({ ...this.p });
  }
}

function problemsOfFrozen(f: ProcessFacts, tids: number[]): Problem[] {
  return [...checkProcess(f), ...checkLinks(f.pid, f.links), ...checkThreadCreds(f, tids)];
}

/** What /proc says about one frozen process, and the problems found in it. */
function readFrozenProcess(p: FrozenProcess): {
  facts: ProcessFacts;
  problems: Problem[];
  plan: MemoryPlan;
  fds: ReturnType<typeof describeFds>;
} {
  const facts = readProcessFacts(p.pid);
  const fds = describeFds(p.pid, readFds(p.pid));
  const pagemap = new PagemapFile(p.pid);
  let plan: MemoryPlan;
  try {
    plan = planMemory(p.pid, readSmaps(p.pid), pagemap);
  } finally {
    pagemap.close();
  }
  return { facts, fds, plan, problems: [...problemsOfFrozen(facts, p.tids), ...fds.problems, ...plan.problems] };
}

function zombieRecord(p: FrozenProcess): { entry: TreeEntry; record: ZombieRecord } {
  const stat = readStat(p.pid);
  return {
    entry: { pid: p.pid, ppid: p.ppid, pgid: stat.pgrp, sid: stat.session, tids: [p.pid], state: 'zombie' },
    record: { pid: p.pid, comm: stat.comm, exitCode: stat.exitCode, zombie: true },
  };
}

/** Steps 4 and 5: the frozen tree's metadata and memory plans, or a refusal. */
async function collect(tree: FrozenProcess[], freezer: Freezer): Promise<Collected> {
  const read = tree.map((p) => (p.zombie ? null : readFrozenProcess(p)));
  const problems = read.flatMap((r) => r?.problems ?? []);
  if (problems.length > 0) throw refusal(problems);
  assignDescriptions(tree.flatMap((p, i) => (read[i] ? [{ pid: p.pid, records: read[i].fds.records }] : [])));

  const meta: Collected['meta'] = { tree: { processes: [] }, processes: [], threads: [], pipes: [], shmem: [] };
  const plans: MemoryPlan[] = [];
  const pipeRefs: PipeRef[] = [];
  const shmem = new Map<string, ShmemRef>();
  let vmas = 0;
  for (let i = 0; i < tree.length; i++) {
    const p = tree[i]!;
    const r = read[i];
    if (!r) {
      const z = zombieRecord(p);
      meta.tree.processes.push(z.entry);
      meta.processes.push(z.record);
      continue;
    }
    const { facts, plan } = r;
    const state = p.stopped ? 'stopped' : 'running';
    meta.tree.processes.push({
      pid: p.pid,
      ppid: p.ppid,
      pgid: facts.stat.pgrp,
      sid: facts.stat.session,
      tids: p.tids,
      state,
    });
    const { record, threads } = await injectAndRead(freezer, p, facts, plan, r.fds.records);
    meta.processes.push(record);
    meta.threads.push(...threads);
    plans.push(plan);
    pipeRefs.push(...r.fds.pipes);
    for (const s of plan.shmem) if (!shmem.has(s.id)) shmem.set(s.id, s);
    vmas += plan.vmas.length;
  }
  meta.pipes = collectPipes(pipeRefs, new Set(tree.map((p) => p.pid)));
  meta.shmem = [...shmem.values()].map(shmemRecord);
  const rootPlan = plans[0];
  return { meta, plans, shmem: [...shmem.values()], vdso: rootPlan ? rootPlan.specials : [], vmas };
}

async function injectAndRead(
  freezer: Freezer,
  p: FrozenProcess,
  facts: ProcessFacts,
  plan: MemoryPlan,
  fds: ProcessRecord['fds'],
): Promise<{ record: ProcessRecord; threads: ThreadRecord[] }> {
  const tracer = freezer.tracer;
  const leader = p.tids[0];
  if (leader === undefined) throw new Error(`process ${p.pid} has no thread left to ask`);
  return withScratch(tracer, p.pid, leader, async (s) => {
    const brk = await s.brk(leader);
    const pdeathsig = await s.pdeathsig(leader);
    const sigactions = await s.sigactions(leader, nonDefaultSignals(facts.status));
    const threads: ThreadRecord[] = [];
    for (const tid of p.tids) threads.push(await readThread(tracer, s, p.pid, tid, freezer.groupStopped(tid)));
    const sharedPending = await pendingSignals(tracer, leader, true);
    const record = processRecord(facts, { brk, pdeathsig, sigactions, sharedPending, vmas: plan.vmas, fds });
    return { record, threads };
  });
}

/** Every piece of page data of the dump, in address order per address space. */
function* pagePieces(c: Collected, alloc: Allocator): Generator<PagePiece> {
  for (const plan of c.plans) yield* readPrivatePages(plan, mmIdOf(plan.pid), alloc);
  for (const s of c.shmem) yield* readShmemPages(s, shmemMmId(s.id), alloc);
}

/** One buffer for every piece: the store writer copies what it keeps before addPages resolves. */
function reusedPiece(): Allocator {
  const buf = Buffer.allocUnsafe(READ_PAGES * 4096);
  return (bytes) => buf.subarray(0, bytes);
}

function pagesOf(piece: PagePiece): number {
  return piece.data.length / 4096;
}

/** A failure that is not one of ours (a syscall, /proc, ...) becomes DUMP_FAILED with the original as cause. */
function asDumpError(e: unknown, root: number): unknown {
  if (isLazyRestoreError(e) || isStoreError(e)) return e;
  const code = (e as { code?: unknown }).code;
  if ((code === 'EOPNOTSUPP' || code === 'ENOTSUP') && e instanceof Error) {
    // The tracer refuses injections that would alter a task's signal state (SIGTRAP blocked inside
    // sigsuspend/ppoll/pselect and the like).
    return new LazyRestoreError(
      'UNSUPPORTED_TASK',
      `cannot ask a task of process ${root} for its state: ${e.message}`,
      {
        pid: root,
        cause: e,
      },
    );
  }
  if (isNoSuchProcess(e)) {
    return new LazyRestoreError('DUMP_FAILED', `process ${e.pid} exited during the dump (killed?)`, {
      pid: root,
      cause: e,
    });
  }
  const message = e instanceof Error ? e.message : String(e);
  return new LazyRestoreError('DUMP_FAILED', `dump of process ${root} failed: ${message}`, { pid: root, cause: e });
}

async function writePieces(writer: ImageWriter, pieces: Iterable<PagePiece>, progress: Progress): Promise<void> {
  for (const piece of pieces) {
    progress.p.pagesRead += pagesOf(piece);
    await writer.addPages(piece.mmId, piece.address, piece.data, piece.present);
    progress.set({ pagesWritten: progress.p.pagesWritten + pagesOf(piece) });
  }
}

/** Steps 1 and 2: refusals on the live tree, then the image name reserved in the store. */
async function begin(
  store: ImageStore,
  pid: number,
  options: DumpOptions,
): Promise<{ writer: ImageWriter; estimatedPages: number }> {
  try {
    const { estimatedPages } = preflight(pid);
    const comm = readComm(pid);
    const name = options.name ?? defaultImageName(comm, pid, new Date());
    return { writer: await store.beginImage(name, { rootPid: pid, tool: 'lazyrestore dump', comm }), estimatedPages };
  } catch (e) {
    if (isNoSuchProcess(e) && e.pid === pid) {
      throw new LazyRestoreError('NO_SUCH_PROCESS', `no such process: ${pid}`, { pid, cause: e });
    }
    throw asDumpError(e, pid);
  }
}

/** Checkpoints the tree rooted at `pid` into `store`. See the module comment for the steps and guarantees. */
export async function dump(store: ImageStore, pid: number, options: DumpOptions = {}): Promise<DumpResult> {
  const t0 = performance.now();
  const { writer, estimatedPages } = await begin(store, pid, options);
  const progress = new Progress(options.onProgress);
  const leaveRunning = options.leaveRunning === true;
  // --leave-running keeps every page in memory until the tree runs again: that memory is faulted in now,
  // not while the tree is frozen. Streaming into the store reuses one piece of memory throughout.
  const alloc = leaveRunning ? new PagePool(estimatedPages).take : reusedPiece();
  const freezer = new Freezer(Tracer.open(), { timeoutMs: options.freezeTimeoutMs });
  let tFrozen = 0;
  let tReleased = 0;
  let held = true;
  try {
    progress.set({ phase: 'freezing' });
    tFrozen = performance.now();
    const tree = await freezer.freeze(pid);
    progress.set({ phase: 'collecting' });
    const c = await collect(tree, freezer);
    const pagesTotal = c.plans.reduce((n, p) => n + p.pages, 0) + c.shmem.reduce((n, s) => n + s.size / 4096, 0);
    progress.set({ phase: 'reading', pagesTotal });
    if (leaveRunning) {
      const pieces: PagePiece[] = [];
      for (const piece of pagePieces(c, alloc)) {
        pieces.push(piece);
        progress.set({ pagesRead: progress.p.pagesRead + pagesOf(piece) });
      }
      progress.set({ phase: 'releasing' });
      held = false;
      await freezer.release();
      tReleased = performance.now();
      progress.set({ phase: 'writing', pagesRead: 0 });
      await writePieces(writer, pieces, progress);
    } else {
      progress.set({ phase: 'writing' });
      await writePieces(writer, pagePieces(c, alloc), progress);
    }
    const frozenSoFar = (held ? performance.now() : tReleased) - tFrozen;
    putImageMetadata(writer, { ...c.meta, image: imageRecord(pid, c, frozenSoFar) });
    progress.set({ phase: 'committing' });
    const summary = await writer.commit();
    if (held) {
      progress.set({ phase: 'killing' });
      held = false;
      await freezer.kill(tree);
      tReleased = performance.now();
    }
    const tEnd = performance.now();
    return result(summary, pid, c, {
      frozenMs: tReleased - tFrozen,
      totalMs: tEnd - t0,
      writeAfterReleaseMs: leaveRunning ? tEnd - tReleased : 0,
      leftRunning: leaveRunning,
    });
  } catch (e) {
    await writer.abort().catch(() => undefined);
    if (held) {
      try {
        await freezer.release();
      } catch (r) {
        throw new LazyRestoreError(
          'DUMP_FAILED',
          `dump of process ${pid} failed (${describe(e)}) and releasing the tree failed too: ${describe(r)}`,
          { pid, cause: e },
        );
      }
    }
    throw asDumpError(e, pid);
  }
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function imageRecord(pid: number, c: Collected, frozenMs: number): ImageMetadata['image'] {
  return {
    format: IMAGE_FORMAT,
    createdAt: new Date().toISOString(),
    tool: 'lazyrestore dump',
    kernel: { release: osRelease(), arch: machine() },
    pageSize: 4096,
    rootPid: pid,
    vdso: c.vdso,
    frozenMs: Math.round(frozenMs * 1000) / 1000,
  };
}

function result(
  summary: ImageSummary,
  pid: number,
  c: Collected,
  times: Pick<DumpResult, 'frozenMs' | 'totalMs' | 'writeAfterReleaseMs' | 'leftRunning'>,
): DumpResult {
  return {
    name: summary.name,
    id: summary.id,
    rootPid: pid,
    processes: c.meta.tree.processes.length,
    threads: c.meta.threads.length,
    vmas: c.vmas,
    pagesDumped: summary.pages + summary.zeroPages,
    bytes: summary.bytes,
    bytesStored: summary.newBytes,
    dedupRatio: summary.newBytes === 0 ? null : summary.bytes / summary.newBytes,
    ...times,
    summary,
  };
}
