/**
 * Restores run by the daemon (POST /v1/restores). Each is a job of kind 'restore' (daemon/jobs.ts) whose
 * operation lasts until every restored task is complete; this registry adds what a restore has beyond a job:
 * its state (restoring -> running -> complete | failed), the tree's pids, the lazy pages still to deliver and
 * the report the CLI prints (the same one whether the daemon or the CLI itself did the restore).
 *
 * The restore hands its uffds to the daemon's page service, which keeps serving them after the request.
 */
import type { PageService } from '../daemon/page-service.js';
import type { JobControl, JobRegistry } from '../daemon/jobs.js';
import type { ImageStore } from '../daemon/store/index.js';
import { restoreImage, type RestoreCompletion, type RestoredTree } from '../daemon/restore/index.js';
import { checkCompatible, checkIdsFree, loadImageOrThrow } from '../daemon/restore/image.js';
import { problemOf } from './errors.js';
import type { ProblemBody } from './schemas.js';

export type RestoreState = 'restoring' | 'running' | 'complete' | 'failed';

/** What `lazyrestore restore` prints; the completion figures are null until every task is complete. */
export type RestoreReport = {
  image: string;
  imageId: string;
  rootPid: number;
  processes: RestoredTree['processes'];
  mode: 'lazy' | 'eager';
  runningMs: number;
  completeMs: number | null;
  /** Where the time until running went, per step (ms). */
  phases: Record<string, number>;
  eagerBytes: number;
  faultPages: number | null;
  backgroundPages: number | null;
  cachedBytes: number | null;
  notes: string[];
  errors: string[];
};

export function restoreReport(tree: RestoredTree, done: RestoreCompletion | null): RestoreReport {
  return {
    image: tree.name,
    imageId: tree.imageId,
    rootPid: tree.rootPid,
    processes: tree.processes,
    mode: tree.lazy ? 'lazy' : 'eager',
    runningMs: tree.runningMs,
    completeMs: done?.completeMs ?? null,
    phases: tree.phases,
    eagerBytes: tree.eagerBytes,
    faultPages: done?.faultPages ?? null,
    backgroundPages: done?.backgroundPages ?? null,
    cachedBytes: done?.cachedBytes ?? null,
    notes: tree.notes,
    errors: done?.errors ?? [],
  };
}

/** A restore as the API shows it. */
export interface RestoreView {
  id: string;
  image: string;
  eager: boolean;
  state: RestoreState;
  rootPid: number | null;
  pids: number[];
  progress: {
    /** Page-service tasks of this restore still served (restored processes and children they forked). */
    tasks: number;
    /** Lazy pages not delivered yet, over those tasks. */
    lazyPagesLeft: number;
  };
  /** From the request until the tree ran, and until every task was complete. */
  runningMs: number | null;
  completeMs: number | null;
  createdAt: string;
  finishedAt: string | null;
  report: RestoreReport | null;
  error: ProblemBody | null;
}

function initialView(image: string, eager: boolean): RestoreView {
  return {
    id: '',
    image,
    eager,
    state: 'restoring',
    rootPid: null,
    pids: [],
    progress: { tasks: 0, lazyPagesLeft: 0 },
    runningMs: null,
    completeMs: null,
    createdAt: new Date().toISOString(),
    finishedAt: null,
    report: null,
    error: null,
  };
}

interface Entry {
  view: RestoreView;
  /** Page-service task ids this restore registered (forked children are found through their parent). */
  taskIds: Set<number>;
  /** Copy lazy pages in the background (the request's `prefetch`). */
  prefetch: boolean;
}

/**
 * The daemon's page service as one restore sees it: every call goes to the shared service, and the ids of the
 * tasks this restore adds are recorded, which is how a restore's lazy pages are told from another's while
 * several run at once. Methods are bound to the real service (its private fields need the real `this`).
 */
function recordingService(service: PageService, taskIds: Set<number>): PageService {
  return new Proxy(service, {
    get(target, prop) {
      const value: unknown = Reflect.get(target, prop, target);
      if (prop === 'addTask') {
        return (...args: Parameters<PageService['addTask']>) => {
          const id = target.addTask(...args);
          taskIds.add(id);
          return id;
        };
      }
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

export class RestoreRegistry {
  readonly #entries = new Map<string, Entry>();

  constructor(
    private readonly store: ImageStore,
    private readonly pageService: PageService,
    private readonly jobs: JobRegistry,
  ) {}

  /**
   * Starts a restore job. `accepted` resolves once the image is loaded and its pids are free (the request is
   * then answered 202), or rejects with the failure if the restore fails before that. `done` settles when the
   * job does: with the report once every task is complete.
   */
  start(
    image: string,
    eager: boolean,
    prefetch = true,
  ): { id: string; accepted: Promise<void>; done: Promise<RestoreReport> } {
    const entry: Entry = { taskIds: new Set(), view: initialView(image, eager), prefetch };
    let accept: () => void = () => undefined;
    const accepted = new Promise<void>((resolve) => (accept = resolve));
    const { id, done } = this.jobs.start<RestoreReport>({
      kind: 'restore',
      params: { image, eager, prefetch },
      run: (job) => this.#run(entry, job, accept),
      summarize: (r) => ({ ...r }),
    });
    entry.view.id = id;
    this.#entries.set(id, entry);
    done.then(
      () => (entry.view.finishedAt = new Date().toISOString()),
      (e: unknown) => {
        const error = problemOf(e, id).problem;
        error.instance = `/v1/restores/${id}`;
        Object.assign(entry.view, { state: 'failed', finishedAt: new Date().toISOString(), error });
      },
    );
    return { id, accepted: Promise.race([accepted, done.then(() => undefined)]), done };
  }

  async #run(entry: Entry, job: JobControl, accept: () => void): Promise<RestoreReport> {
    const t0 = performance.now();
    const v = entry.view;
    job.setProgress({ phase: 'restoring', done: 0, total: 0, unit: 'pages' });
    // The cheap checks first, so that a missing image or a pid in use is the answer to the request itself.
    const img = await loadImageOrThrow(this.store, v.image);
    checkCompatible(img);
    checkIdsFree(img);
    accept();
    const pageService = recordingService(this.pageService, entry.taskIds);
    const tree = await restoreImage(this.store, v.image, { eager: v.eager, pageService, background: entry.prefetch });
    // The daemon is the root's parent: restoreImage reaps it; its exit status is nobody's business here.
    tree.exited.catch(() => undefined);
    Object.assign(v, {
      state: 'running',
      rootPid: tree.rootPid,
      pids: tree.processes.map((p) => p.pid),
      runningMs: performance.now() - t0,
      report: restoreReport(tree, null),
    });
    job.setProgress({ phase: 'running', done: 0, total: 0, unit: 'pages' });
    const completion = await tree.complete;
    const report = restoreReport(tree, completion);
    Object.assign(v, { state: 'complete', completeMs: performance.now() - t0, report });
    return report;
  }

  get(id: string): RestoreView | undefined {
    const entry = this.#entries.get(id);
    return entry === undefined ? undefined : this.#snapshot(entry);
  }

  /** Restores, newest first; those whose job the registry dropped are dropped too. */
  list(): RestoreView[] {
    const out: RestoreView[] = [];
    for (const [id, entry] of this.#entries) {
      if (this.jobs.get(id) === undefined) this.#entries.delete(id);
      else out.push(this.#snapshot(entry));
    }
    return out.reverse();
  }

  #snapshot(entry: Entry): RestoreView {
    const view = { ...entry.view, pids: [...entry.view.pids] };
    if (view.state === 'running') {
      const ours = new Set(entry.taskIds);
      const stats = this.pageService.closed ? [] : this.pageService.stats();
      // Children forked by a task of ours are ours too; a parent comes before its children in no set order.
      for (let grew = true; grew;) {
        grew = false;
        for (const s of stats) {
          if (!ours.has(s.task) && s.parent !== null && ours.has(s.parent)) {
            ours.add(s.task);
            grew = true;
          }
        }
      }
      const mine = stats.filter((s) => ours.has(s.task));
      view.progress = { tasks: mine.length, lazyPagesLeft: mine.reduce((n, s) => n + s.lazyPages, 0) };
    } else {
      view.progress = { ...view.progress };
    }
    return view;
  }
}
