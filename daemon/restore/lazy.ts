/**
 * Lazy memory of a restored tree (userfaultfd(2), ioctl_userfaultfd(2), pidfd_getfd(2); daemon/page-service.ts).
 *
 * Each process creates its uffd itself (a uffd belongs to the mm of its creator): userfaultfd is injected, the
 * restoring process takes a copy with pidfd_getfd and the task's own fd is closed again (the task must not keep
 * one: the ranges must unregister when the service closes its copy). From the restoring process: UFFDIO_API with
 * the non-cooperative events, UFFDIO_REGISTER (missing mode) of every lazy VMA, and the uffd handed to the page
 * service, whose native thread serves faults from a PageSource: the page data of the dumped address space, keyed
 * by dumped address. JavaScript feeds the source from the store: the windows tasks wait for first (`need`
 * events), then every window in address order, while the service copies what has arrived in the background.
 */
import { native, UFFD_FEATURES, UFFDIO_REGISTER_MODE_MISSING, uffdFeatureNames } from '../../native/index.js';
import { PageSource, type PageService, type PageServiceEvents } from '../page-service.js';
import type { PageServiceTaskStats } from '../../native/index.js';
import { LazyRestoreError } from '../errors.js';
import { mmIdOf, shmemMmId } from '../dump/image.js';
import { isStoreError, type ImageStore, type PageWindow } from '../store/index.js';
import type { ProcTask, RestoreContext } from './context.js';
import { isLazyShmemVma, isLazyVma } from './memory.js';
import { readStat } from '../proc/stat.js';
import { PAGE, SYS, UFFD_FLAGS } from './sys.js';

/** Who a task is, journaled with its adoption so that a successor daemon can serve it (daemon/custody/). */
export interface CustodyTag {
  image: string;
  mm: string;
  /** null for a forked child: its uffd came from UFFD_EVENT_FORK, which names no pid. */
  pid: number | null;
  /** The process's start time (/proc/<pid>/stat field 22), so that a successor never mistakes a reused pid. */
  start?: number;
}

/** The uffd features lazy restore needs: a forked child, mremap, madvise and munmap must keep the state exact. */
export const LAZY_FEATURES =
  UFFD_FEATURES.UFFD_FEATURE_EVENT_FORK |
  UFFD_FEATURES.UFFD_FEATURE_EVENT_REMAP |
  UFFD_FEATURES.UFFD_FEATURE_EVENT_REMOVE |
  UFFD_FEATURES.UFFD_FEATURE_EVENT_UNMAP;
const WINDOW = 16 * PAGE;
const USER_END = 0x8000_0000_0000;
const STATS_INTERVAL_MS = 20;

/** Refuses lazy restore on a kernel without every feature it needs, naming the missing ones. */
export function checkLazySupported(): void {
  let offered: number;
  try {
    offered = native.uffdProbe().features;
  } catch (e) {
    throw new LazyRestoreError(
      'LAZY_UNSUPPORTED',
      `userfaultfd is not usable here (${(e as Error).message}); use --eager`,
      {
        cause: e,
      },
    );
  }
  checkLazyFeatures(offered);
}

/** The decision of {@link checkLazySupported} for the feature mask a kernel offers (UFFDIO_API): refuses lazy
 *  restore with LAZY_UNSUPPORTED naming every feature of {@link LAZY_FEATURES} the mask lacks. */
export function checkLazyFeatures(offered: number): void {
  const missing = LAZY_FEATURES & ~offered;
  if (missing !== 0) {
    throw new LazyRestoreError(
      'LAZY_UNSUPPORTED',
      `this kernel's userfaultfd lacks ${uffdFeatureNames(missing).join(', ')}, which lazy restore needs; use --eager`,
    );
  }
}

/** Copies one window into a source: its pages with data, and the rest as zero (absent or zero when dumped). */
function feedWindow(source: PageSource, w: PageWindow): void {
  let k = 0;
  for (let i = 0; i < 16;) {
    const has = (w.bitmap & (1 << i)) !== 0;
    let j = i;
    while (j < 16 && ((w.bitmap & (1 << j)) !== 0) === has) j++;
    const addr = w.address + i * PAGE;
    if (has) {
      source.provide(addr, w.data.subarray(k * PAGE, (k + j - i) * PAGE));
      k += j - i;
    } else {
      source.markZero(addr, (j - i) * PAGE);
    }
    i = j;
  }
}

/**
 * The page data of one dumped address space, in memory, shared by every restore of it in this process (a second
 * restore of an image whose data is already here is served from memory).
 */
export class SourceEntry {
  readonly source = new PageSource();
  /** Every window has been fed. */
  complete = false;
  /** Restores still being served from this source; streaming stops when none is left. */
  users = 0;
  private streaming: Promise<void> | null = null;
  /** The store `streaming` reads: a daemon that took over from one that stopped has a store of its own. */
  private streamingStore: ImageStore | null = null;
  private readonly inflight = new WeakMap<ImageStore, Map<number, Promise<void>>>();

  constructor(
    readonly imageId: string,
    readonly mmId: string,
  ) {}

  /** Brings the windows of [origin, origin+len) in (each once, however many faults ask for it): one for a page,
   *  all of a huge page's. */
  need(store: ImageStore, origin: number, len = PAGE): Promise<void> {
    if (len <= WINDOW) return this.needWindow(store, origin);
    const first = origin - (origin % WINDOW);
    const all: Array<Promise<void>> = [];
    for (let w = first; w < origin + len; w += WINDOW) all.push(this.needWindow(store, w));
    return Promise.all(all).then(() => undefined);
  }

  private needWindow(store: ImageStore, origin: number): Promise<void> {
    const window = origin - (origin % WINDOW);
    let pending = this.inflight.get(store);
    if (!pending) this.inflight.set(store, (pending = new Map<number, Promise<void>>()));
    let p = pending.get(window);
    if (!p) {
      p = store.pageWindow(this.imageId, this.mmId, origin).then((w) => {
        if (w) feedWindow(this.source, w);
        else this.source.markZero(window, WINDOW);
      });
      p.finally(() => pending.delete(window)).catch(() => undefined);
      pending.set(window, p);
    }
    return p;
  }

  /** Feeds every window in address order (and zero for every gap), unless another restore already does. */
  stream(store: ImageStore): Promise<void> {
    if (this.complete) return Promise.resolve();
    if (!this.streaming || this.streamingStore !== store) {
      const run = this.run(store).finally(() => {
        if (this.streaming === run) this.streaming = null;
      });
      this.streaming = run;
      this.streamingStore = store;
    }
    return this.streaming;
  }

  private async run(store: ImageStore): Promise<void> {
    let next = 0;
    for await (const w of store.pages(this.imageId, this.mmId)) {
      if (this.users === 0) return;
      if (w.address > next) this.source.markZero(next, w.address - next);
      feedWindow(this.source, w);
      next = w.address + WINDOW;
    }
    this.source.markZero(next, USER_END - next);
    this.complete = true;
  }
}

/**
 * Page sources by image and address space. Module-wide on purpose: the point is to outlive one restore, so that
 * restoring the same image again is served from memory. Bounded: complete sources nobody uses are dropped, oldest
 * first, once the total exceeds the limit.
 */
class SourceCache {
  private readonly entries = new Map<string, SourceEntry>();
  limitBytes = Number(process.env['LAZYRESTORE_SOURCE_CACHE_BYTES'] ?? 2 ** 31);

  get(imageId: string, mmId: string): SourceEntry {
    const key = `${imageId}/${mmId}`;
    let e = this.entries.get(key);
    if (e) this.entries.delete(key);
    else e = new SourceEntry(imageId, mmId);
    this.entries.set(key, e); // most recently used last
    return e;
  }

  trim(): void {
    let total = 0;
    for (const e of this.entries.values()) total += e.source.bytes;
    for (const [key, e] of this.entries) {
      if (total <= this.limitBytes) return;
      if (e.users > 0) continue;
      total -= e.source.bytes;
      this.entries.delete(key);
    }
  }

  /** Forgets an image (removed from the store). */
  drop(imageId: string): void {
    for (const [key, e] of this.entries) if (e.imageId === imageId && e.users === 0) this.entries.delete(key);
  }

  get bytes(): number {
    let total = 0;
    for (const e of this.entries.values()) total += e.source.bytes;
    return total;
  }
}

export const sourceCache = new SourceCache();

export interface LazyStats {
  /** Restored tasks (and children they forked) the service followed. */
  tasks: number;
  /** Faults resolved (a page each; a huge page for hugetlb memory), and the other pages the service placed (copied
   *  or zeroed) into the tasks, as their final counters say: a page of a shared object is placed once, through one
   *  of the tasks that map it. */
  faultPages: number;
  backgroundPages: number;
  /** Page data already in memory when the restore began (a repeated restore of the image). */
  cachedBytes: number;
  /** Per-task failures the service reported (the task went on being served where it could). */
  errors: string[];
  /** Milliseconds from the restore call until every task was complete or gone. */
  completeMs: number;
}

/** A shared object of this restore: its page data (shared by every restore of the image) and its lazy state in
 *  the page service (this restore's object only). */
interface SharedServed {
  entry: SourceEntry;
  object: number;
}

interface Served {
  pid: number;
  entry: SourceEntry;
  lazyPages: number;
  faults: number;
  /** Pages the service placed into the task (from its final counters), once known. */
  placed: number | null;
  done: boolean;
}

/** The lazy part of one restore: registration of each process, feeding, and completion. */
export class LazySession {
  private readonly served = new Map<number, Served>();
  private readonly entries = new Set<SourceEntry>();
  /** By the address space of their data (`shmem:<id>`). */
  private readonly shared = new Map<string, SharedServed>();
  /** Every source this restore feeds, by PageSource id (`need` events name the source). */
  private readonly bySource = new Map<number, SourceEntry>();
  private readonly errors: string[] = [];
  private readonly listeners: Array<() => void> = [];
  private cachedBytes = 0;
  private statsTimer: NodeJS.Timeout | null = null;
  private settle!: { resolve: (s: LazyStats) => void; reject: (e: unknown) => void };
  private failed = false;
  /** A feed failure, kept so that a restore still in progress can abort on it. */
  failure: unknown = null;
  readonly completion: Promise<LazyStats>;

  constructor(
    private readonly store: ImageStore,
    private readonly imageId: string,
    private readonly service: PageService,
    private readonly ownsService: boolean,
    private readonly t0: number,
    private readonly onFatal: (e: unknown) => void,
    private readonly chunkBytes = 1 << 20,
    private readonly background = true,
  ) {
    this.completion = new Promise((resolve, reject) => (this.settle = { resolve, reject }));
    this.completion.catch(() => undefined);
    this.listen('need', (e) => this.onNeed(e.task, e.origin, e.source, e.len));
    this.listen('complete', (e) => this.finish(e.task, e.stats));
    this.listen('exit', (e) => this.finish(e.task, e.stats));
    this.listen('fork', (e) => this.onFork(e.task, e.child));
    this.listen('taskError', (e) => {
      if (!this.served.has(e.task)) return;
      const what = `task of process ${this.served.get(e.task)!.pid || '(forked after restore)'}: ${e.message}`;
      this.errors.push(what);
      // The service can no longer vouch for this task's memory: it must not run on.
      if (e.fatal) this.fail(new LazyRestoreError('RESTORE_FAILED', `lazy memory is no longer certain: ${what}`));
    });
  }

  private listen<K extends keyof PageServiceEvents>(name: K, fn: (...args: PageServiceEvents[K]) => void): void {
    this.service.on(name, fn as never);
    this.listeners.push(() => this.service.off(name, fn as never));
  }

  /** Creates, negotiates and registers the uffd of `task`, and hands it to the page service. */
  async register(ctx: RestoreContext, task: ProcTask): Promise<void> {
    const vmas = task.image.record!.vmas.filter((v) => isLazyVma(v, ctx.lazyHuge));
    const shmemVmas = task.image.record!.vmas.filter((v) => isLazyShmemVma(v, ctx.lazyShmem));
    const huge = [...vmas, ...shmemVmas].some((v) => v.hugePageSize !== undefined);
    const shmem = shmemVmas.some((v) => v.hugePageSize === undefined);
    if (vmas.length === 0 && shmemVmas.length === 0) return;
    const b = ctx.batch(task);
    b.call('userfaultfd', SYS.userfaultfd, [UFFD_FLAGS]);
    const [inTask] = await b.run();
    let uffd = -1;
    try {
      const pidfd = native.pidfdOpen(task.pid, 0);
      try {
        uffd = native.pidfdGetfd(pidfd, Number(inTask));
      } finally {
        native.closeFd(pidfd);
      }
    } finally {
      b.call('close(uffd)', SYS.close, [Number(inTask)]);
      await b.run();
    }
    const entry = sourceCache.get(this.imageId, mmIdOf(task.pid));
    let id: number;
    try {
      // MISSING_SHMEM only when needed: a kernel without it still restores private memory lazily.
      const features =
        LAZY_FEATURES |
        (shmem ? UFFD_FEATURES.UFFD_FEATURE_MISSING_SHMEM : 0) |
        (huge ? UFFD_FEATURES.UFFD_FEATURE_MISSING_HUGETLBFS : 0);
      native.uffdApi(uffd, features);
      for (const v of [...vmas, ...shmemVmas])
        native.uffdRegister(uffd, v.start, v.end - v.start, UFFDIO_REGISTER_MODE_MISSING);
      id = this.service.addTask(uffd, entry.source, task.pid, {
        image: this.imageId,
        mm: mmIdOf(task.pid),
        pid: task.pid,
        start: readStat(task.pid).starttime,
      } satisfies CustodyTag);
    } catch (e) {
      native.closeFd(uffd);
      throw e;
    }
    // From here the service owns the uffd.
    let pages = 0;
    for (const v of vmas) {
      this.service.addLazyRange(id, v.start, v.end - v.start, v.start, 0, v.hugePageSize ?? PAGE);
      pages += (v.end - v.start) / PAGE;
    }
    for (const v of shmemVmas) {
      const obj = this.sharedObject(ctx, v.shmem!);
      // A hugetlb object is filled a whole huge page at a time, as its private counterpart.
      this.service.addLazyRange(id, v.start, v.end - v.start, v.offset, obj.object, v.hugePageSize ?? PAGE);
      pages += (v.end - v.start) / PAGE;
    }
    if (this.background) this.service.setBackground(id, true, this.chunkBytes);
    task.serviceTask = id;
    entry.users++;
    this.addEntry(entry);
    this.served.set(id, { pid: task.pid, entry, lazyPages: pages, faults: 0, placed: null, done: false });
  }

  private addEntry(entry: SourceEntry): void {
    if (!this.entries.has(entry)) this.cachedBytes += entry.source.bytes;
    this.entries.add(entry);
    this.bySource.set(entry.source.id, entry);
  }

  /** The service's object for shared object `id`, made on first use: its data is fetched once for every task
   *  that maps it, and each page is filled once, through whichever task needs it first. */
  private sharedObject(ctx: RestoreContext, id: string): SharedServed {
    return this.sharedObjectOf(shmemMmId(id), Math.ceil(ctx.img.shmem.get(id)!.size / PAGE) * PAGE);
  }

  private sharedObjectOf(mm: string, size: number): SharedServed {
    let s = this.shared.get(mm);
    if (!s) {
      const entry = sourceCache.get(this.imageId, mm);
      // Journaled with the object (custody), so that a successor finds its data again.
      const tag = JSON.stringify({ image: this.imageId, mm });
      s = { entry, object: this.service.addSharedObject(entry.source, size, tag) };
      // One user for the whole restore: the object's data is needed until every task is complete.
      entry.users++;
      this.addEntry(entry);
      this.shared.set(mm, s);
    }
    return s;
  }

  /** A shared object a predecessor served (daemon/custody/recover.ts), made again in this page service; returns
   *  its id here. */
  adoptShared(mm: string, size: number): number {
    return this.sharedObjectOf(mm, size).object;
  }

  private releaseShared(): void {
    for (const s of this.shared.values()) s.entry.users--;
    this.shared.clear();
  }

  /** Resolves once every uffd registered so far is journaled and in custody (when the service has custody). */
  async custodyBarrier(): Promise<void> {
    if (this.served.size > 0 && this.service.hasCustody) await this.service.sync();
  }

  /** Takes over a task a predecessor served (daemon/custody/recover.ts): `id` is already the service's, with its
   *  lazy state replayed. */
  adopt(id: number, pid: number, entry: SourceEntry): void {
    entry.users++;
    this.entries.add(entry);
    this.served.set(id, { pid, entry, lazyPages: 0, faults: 0, placed: null, done: false });
  }

  /** Called once the tree runs: feeds every address space, and completes when every task has. */
  start(): void {
    if (this.served.size === 0) {
      this.complete();
      return;
    }
    this.statsTimer = setInterval(() => this.sampleStats(), STATS_INTERVAL_MS);
    this.statsTimer.unref();
    void this.streamAll();
  }

  private async streamAll(): Promise<void> {
    try {
      for (const entry of this.entries) await entry.stream(this.store);
    } catch (e) {
      this.fail(e);
    }
  }

  private onNeed(task: number, origin: number, source: number, len: number): void {
    const s = this.served.get(task);
    if (!s) return;
    const entry = this.bySource.get(source) ?? s.entry;
    entry.need(this.store, origin, len).catch((e: unknown) => this.fail(e));
  }

  private onFork(parent: number, child: number): void {
    const s = this.served.get(parent);
    if (!s) return;
    s.entry.users++;
    this.served.set(child, { pid: 0, entry: s.entry, lazyPages: 0, faults: 0, placed: null, done: false });
  }

  private sampleStats(): void {
    if (this.service.closed) return;
    for (const st of this.service.stats()) {
      const s = this.served.get(st.task);
      if (s && !s.done) s.faults = st.faults;
    }
  }

  private finish(task: number, stats?: PageServiceTaskStats): void {
    const s = this.served.get(task);
    if (!s || s.done) return;
    s.done = true;
    if (stats) {
      s.faults = stats.faults;
      s.placed = stats.pagesCopied + stats.pagesZeroed;
    }
    s.entry.users--;
    if ([...this.served.values()].every((x) => x.done)) this.complete();
  }

  private stopListening(): void {
    if (this.statsTimer) clearInterval(this.statsTimer);
    this.statsTimer = null;
    for (const off of this.listeners.splice(0)) off();
  }

  private complete(): void {
    if (this.failed) return;
    this.stopListening();
    this.releaseShared();
    const tasks = [...this.served.values()];
    const faultPages = tasks.reduce((n, s) => n + s.faults, 0);
    // Without final counters (none arrived), what was declared lazy.
    const lazyPages = tasks.reduce((n, s) => n + (s.placed ?? s.lazyPages), 0);
    const stats: LazyStats = {
      tasks: tasks.length,
      faultPages,
      backgroundPages: Math.max(0, lazyPages - faultPages),
      cachedBytes: this.cachedBytes,
      errors: this.errors,
      completeMs: performance.now() - this.t0,
    };
    sourceCache.trim();
    const closing = this.ownsService ? this.service.close() : Promise.resolve();
    closing.then(
      () => this.settle.resolve(stats),
      (e: unknown) => this.settle.reject(e),
    );
  }

  /** A feed failed (the store could not give the data): the tree must not run on missing memory. */
  private fail(e: unknown): void {
    if (this.failed) return;
    if (isStoreError(e) && e.code === 'STORE_CLOSED' && this.service.hasCustody) {
      // The daemon is stopping: its tasks stay in custody and wait for the next daemon, which serves them.
      this.stopListening();
      return;
    }
    this.failed = true;
    this.failure = e;
    this.onFatal(e);
    this.releaseAll();
    this.settle.reject(e);
  }

  /** Stops serving every task of this restore (failure path: the tasks are being killed). */
  releaseAll(): void {
    this.stopListening();
    this.releaseShared();
    for (const [id, s] of this.served) {
      if (!s.done && !this.service.closed) {
        try {
          this.service.releaseTask(id);
        } catch {
          // the service already forgot it
        }
      }
      if (!s.done) s.entry.users--;
      s.done = true;
    }
    if (this.ownsService && !this.service.closed) void this.service.close({ closeUffds: true }).catch(() => undefined);
  }
}
