/**
 * The daemon's job registry: every long operation it runs on behalf of a client (a dump now, a restore once
 * the restore engine is wired in) is a job with an id, a state, its progress and its times, so a client can
 * follow it (GET /v1/jobs/:id) whether or not it is still waiting for the answer, and shutdown can wait for
 * what is still running.
 *
 * A job runs as soon as it is created (no queue: the operations bring their own locking, e.g. a second dump of
 * a tree that is already frozen is refused by the dump itself). Finished jobs are kept, newest first, up to
 * `keepFinished`; running jobs are never dropped.
 */
import { randomUUID } from 'node:crypto';
import { httpStatusOf, isLazyRestoreError, LazyRestoreError } from './errors.js';
import { isStoreError } from './store/errors.js';

export type JobKind = 'dump' | 'restore';
export type JobState = 'running' | 'succeeded' | 'failed';

/** How far a job got: `done` of `total` `unit`s in its current `phase` (total 0 while unknown). */
export interface JobProgress {
  phase: string;
  done: number;
  total: number;
  unit: string;
}

/** Why a job failed: the error's stable code, its HTTP status and its message. */
export interface JobError {
  code: string;
  status: number;
  message: string;
}

/** A job as the API shows it. `params` and `result` are JSON. */
export interface JobView {
  id: string;
  kind: JobKind;
  state: JobState;
  params: Record<string, unknown>;
  progress: JobProgress | null;
  createdAt: string;
  finishedAt: string | null;
  /** From creation to the end (or to now while running), milliseconds. */
  elapsedMs: number;
  result: Record<string, unknown> | null;
  error: JobError | null;
}

/** What a running operation can do to its job. */
export interface JobControl {
  readonly id: string;
  setProgress(progress: JobProgress): void;
}

export interface JobRunner<T> {
  kind: JobKind;
  params: Record<string, unknown>;
  run: (job: JobControl) => Promise<T>;
  /** The JSON result the job keeps once `run` succeeds. */
  summarize: (value: T) => Record<string, unknown>;
}

interface Job {
  view: JobView;
  started: number;
  done: Promise<unknown>;
}

export interface JobRegistryOptions {
  /** Finished jobs kept for inspection (oldest dropped first). Default 100. */
  keepFinished?: number;
}

/**
 * What a client may see of a failure: our own errors (LazyRestoreError, StoreError) with their stable code,
 * status and message; anything else is an internal error whose details stay in the daemon's log.
 */
export function publicErrorOf(e: unknown): JobError {
  if (isLazyRestoreError(e) || isStoreError(e))
    return { code: e.code, status: httpStatusOf(e.code), message: e.message };
  return { code: 'INTERNAL_ERROR', status: 500, message: 'internal error (the daemon log has the details)' };
}

export class JobRegistry {
  readonly #jobs = new Map<string, Job>();
  readonly #keepFinished: number;
  readonly #finishListeners = new Set<(view: JobView) => void>();
  #closed = false;

  constructor(options: JobRegistryOptions = {}) {
    this.#keepFinished = options.keepFinished ?? 100;
  }

  /** Starts a job; `done` settles with the operation (the job's state is final by then). */
  start<T>(runner: JobRunner<T>): { id: string; done: Promise<T> } {
    if (this.#closed) throw new LazyRestoreError('SHUTTING_DOWN', 'the daemon is shutting down: no new jobs');
    const id = randomUUID();
    const started = performance.now();
    const view: JobView = {
      id,
      kind: runner.kind,
      state: 'running',
      params: runner.params,
      progress: null,
      createdAt: new Date().toISOString(),
      finishedAt: null,
      elapsedMs: 0,
      result: null,
      error: null,
    };
    const control: JobControl = {
      id,
      setProgress: (p) => {
        if (view.state === 'running') view.progress = { ...p };
      },
    };
    const job: Job = { view, started, done: Promise.resolve() };
    this.#jobs.set(id, job);
    const done = this.#run(view, started, runner, control);
    job.done = done.catch(() => undefined);
    return { id, done };
  }

  get(id: string): JobView | undefined {
    const job = this.#jobs.get(id);
    return job === undefined ? undefined : this.#snapshot(job);
  }

  /** Jobs, newest first, optionally of one kind and state. */
  list(filter: { kind?: JobKind; state?: JobState } = {}): JobView[] {
    const out: JobView[] = [];
    for (const job of this.#jobs.values()) {
      if (filter.kind !== undefined && job.view.kind !== filter.kind) continue;
      if (filter.state !== undefined && job.view.state !== filter.state) continue;
      out.push(this.#snapshot(job));
    }
    return out.reverse();
  }

  get running(): number {
    let n = 0;
    for (const job of this.#jobs.values()) if (job.view.state === 'running') n++;
    return n;
  }

  /** Called with every job that finishes (for metrics). */
  onFinish(listener: (view: JobView) => void): void {
    this.#finishListeners.add(listener);
  }

  /** Refuses new jobs from now on and resolves once every running job has finished. */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all([...this.#jobs.values()].map((j) => j.done));
  }

  async #run<T>(view: JobView, started: number, runner: JobRunner<T>, control: JobControl): Promise<T> {
    try {
      const value = await runner.run(control);
      view.result = runner.summarize(value);
      view.state = 'succeeded';
      return value;
    } catch (e) {
      view.error = publicErrorOf(e);
      view.state = 'failed';
      throw e;
    } finally {
      view.finishedAt = new Date().toISOString();
      view.elapsedMs = performance.now() - started;
      this.#prune();
      for (const listener of this.#finishListeners) listener({ ...view });
    }
  }

  #snapshot(job: Job): JobView {
    const view = { ...job.view, progress: job.view.progress === null ? null : { ...job.view.progress } };
    if (view.state === 'running') view.elapsedMs = performance.now() - job.started;
    return view;
  }

  #prune(): void {
    let finished = 0;
    for (const job of this.#jobs.values()) if (job.view.state !== 'running') finished++;
    // Map iteration is insertion order: the oldest jobs come first.
    for (const [id, job] of this.#jobs) {
      if (finished <= this.#keepFinished) break;
      if (job.view.state === 'running') continue;
      this.#jobs.delete(id);
      finished--;
    }
  }
}
