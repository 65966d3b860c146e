/**
 * The lazy page service: a thin class around the native page service (one
 * epoll thread that serves the userfaultfds of restored tasks) and its page
 * sources (in-memory image data the fault thread reads directly).
 *
 * Policy stays here and above: which uffds to adopt, which ranges are lazy,
 * where page data comes from (the image store feeds `provide()`, demand first
 * on `need` events, then in address order) and when to prefetch in the
 * background. The mechanism (faults, events, copies) is native.
 *
 * Rules the native service relies on:
 *  - Declare every lazy range of a task (addLazyRange) before the task runs
 *    and before enabling background copy: a task completes (and its uffd is
 *    closed) as soon as it has no lazy page left.
 *  - The task must not keep an fd of its own uffd: once the service closes
 *    its copy (complete, release), the ranges must unregister, or later
 *    faults on non-lazy pages would wait for a monitor that is gone.
 *  - Origin pages the source will never receive (zero pages of the image)
 *    must be declared with markZero(), or faults on them wait forever.
 *  - Page data of an image is immutable: providing a page twice keeps the
 *    first copy.
 *  - A PageService lives until close(): its native thread holds its event
 *    callback, so dropping the object does not stop it. Node is kept alive
 *    only while the service has tasks.
 */
import { EventEmitter } from 'node:events';
import {
  native,
  type LayoutChange,
  type PageServiceCustody,
  type PageServiceEvent,
  type PageServiceHandle,
  type PageServiceTaskStats,
  type PageServiceTotals,
  type PageSourceHandle,
} from '../native/index.js';

type EventOf<T extends PageServiceEvent['type']> = Extract<PageServiceEvent, { type: T }>;
/** Events about tasks (not the service's own `synced`). */
export type TaskEvent = Exclude<PageServiceEvent, { type: 'synced' }>;

/** Events of a {@link PageService}. Per-task failures arrive as `taskError`
 *  (an EventEmitter 'error' without a listener would throw). */
export interface PageServiceEvents {
  need: [EventOf<'need'>];
  fork: [EventOf<'fork'>];
  remap: [EventOf<'remap'>];
  remove: [EventOf<'remove'>];
  unmap: [EventOf<'unmap'>];
  complete: [EventOf<'complete'>];
  exit: [EventOf<'exit'>];
  taskError: [EventOf<'error'>];
  synced: [EventOf<'synced'>];
  /** Every event of a task, in order, whatever its type. */
  event: [TaskEvent];
}

/** In-memory page data of one dumped address space, keyed by origin address. */
export class PageSource {
  readonly #handle: PageSourceHandle = native.pageSourceCreate();
  /** Process-wide id, as `need` events name the source that lacks a page. */
  readonly id = native.pageSourceId(this.#handle);

  /** The native handle, for {@link PageService.addTask}. */
  get handle(): PageSourceHandle {
    return this.#handle;
  }

  /** Copies `data` (a multiple of 4096 bytes) in at `origin`; faults waiting
   *  for those pages are then served. */
  provide(origin: number, data: Buffer): void {
    native.pageSourceProvide(this.#handle, origin, data);
  }

  /** Declares [origin, origin+len) zero in the image. */
  markZero(origin: number, len: number): void {
    native.pageSourceMarkZero(this.#handle, origin, len);
  }

  /** Bytes of page data held. */
  get bytes(): number {
    return native.pageSourceBytes(this.#handle);
  }
}

export interface CloseOptions {
  /** Close the uffds of tasks still served. Default false: closing a uffd
   *  with lazy ranges left would hand its task zero pages instead of its
   *  memory, so by default they stay open (and their tasks wait). */
  closeUffds?: boolean;
}

export interface PageServiceOptions {
  /** Deposit every uffd with a custodian and journal the lazy state (daemon/custody/). */
  custody?: PageServiceCustody;
}

export class PageService extends EventEmitter<PageServiceEvents> {
  #handle: PageServiceHandle | null;
  #closed: Promise<void> | null = null;
  #syncs = 0;
  readonly hasCustody: boolean;

  constructor(options: PageServiceOptions = {}) {
    super();
    this.hasCustody = options.custody !== undefined;
    this.#handle = native.pageServiceOpen((events) => this.#dispatch(events), options.custody);
  }

  get closed(): boolean {
    return this.#handle === null;
  }

  /** Adopts `uffd` (negotiated with UFFDIO_API and registered; the service
   *  owns it from now on) as a task whose data comes from `source`. `pid`: the process of the uffd's mm (tells
   *  MADV_DONTNEED from MADV_REMOVE on shared ranges). `tag` (a JSON-able description of the task) is journaled
   *  when the service has custody. */
  addTask(uffd: number, source: PageSource, pid = 0, tag?: object, paused = false): number {
    return native.pageServiceAddTask(
      this.#open(),
      uffd,
      source.handle,
      pid,
      tag === undefined ? undefined : JSON.stringify(tag),
      paused,
    );
  }

  /** Replays a change of `task`'s address space that a predecessor's journal recorded. */
  applyChange(task: number, kind: LayoutChange, a: number, b: number, len = 0): void {
    native.pageServiceApplyChange(this.#open(), task, kind, a, b, len);
  }

  /** Starts serving a task added paused, and wakes its threads waiting on faults nobody will resolve (read by a
   *  predecessor): they fault again. */
  resume(task: number): void {
    native.pageServiceResume(this.#open(), task);
  }

  /** Appends one line to the custody journal, after every command posted before. */
  note(text: string): void {
    native.pageServiceNote(this.#open(), text);
  }

  /** Resolves once the service thread has applied every command posted before (adoptions are then journaled
   *  and their uffds in custody). */
  sync(): Promise<void> {
    const token = ++this.#syncs;
    const handle = this.#open();
    return new Promise((resolve, reject) => {
      // The native side keeps Node alive only while it holds tasks; the answer must arrive regardless.
      const alive = setInterval(() => undefined, 60_000);
      const onSynced = (e: EventOf<'synced'>) => {
        if (e.token !== token) return;
        this.off('synced', onSynced);
        clearInterval(alive);
        resolve();
      };
      this.on('synced', onSynced);
      try {
        native.pageServiceSync(handle, token);
      } catch (err) {
        this.off('synced', onSynced);
        clearInterval(alive);
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
  }

  /** A shared object whose pages are filled once for every task mapping it (see addLazyRange); `tag` (one line)
   *  is journaled with it when the service has custody. */
  addSharedObject(source: PageSource, size: number, tag?: string): number {
    return native.pageServiceAddSharedObject(this.#open(), source.handle, size, tag);
  }

  /** [start, start+len) of `task` needs the data the source holds at origin; with `object`, the range maps
   *  that shared object from offset `origin`. */
  addLazyRange(task: number, start: number, len: number, origin: number, object = 0, unit = 4096): void {
    native.pageServiceAddLazyRange(this.#open(), task, start, len, origin, object, unit);
  }

  /** Stops serving `task` and closes its uffd. */
  releaseTask(task: number): void {
    native.pageServiceReleaseTask(this.#open(), task);
  }

  /** Feeds page data (same as `source.provide`, checked against a closed service). */
  provide(source: PageSource, origin: number, data: Buffer): void {
    this.#open();
    source.provide(origin, data);
  }

  /** Copies lazy pages whose data is in memory between faults, `chunkBytes` at a time. */
  setBackground(task: number, enabled: boolean, chunkBytes = 1 << 20): void {
    native.pageServiceSetBackground(this.#open(), task, enabled, chunkBytes);
  }

  stats(): PageServiceTaskStats[] {
    return native.pageServiceStats(this.#open());
  }

  /** Totals over every task held so far, and the fault latency histogram. */
  totals(): PageServiceTotals {
    return native.pageServiceTotals(this.#open());
  }

  /** Stops the service thread; resolves once it has been joined. */
  close(options: CloseOptions = {}): Promise<void> {
    if (this.#closed) return this.#closed;
    const handle = this.#open();
    this.#closed = native.pageServiceClose(handle, options.closeUffds ?? false).finally(() => {
      this.#handle = null;
    });
    return this.#closed;
  }

  #open(): PageServiceHandle {
    if (this.#handle === null || this.#closed) throw new Error('PageService is closed');
    return this.#handle;
  }

  #dispatch(events: PageServiceEvent[]): void {
    for (const e of events) {
      if (e.type === 'synced') {
        this.emit('synced', e);
        continue;
      }
      this.emit('event', e);
      switch (e.type) {
        case 'need':
          this.emit('need', e);
          break;
        case 'fork':
          this.emit('fork', e);
          break;
        case 'remap':
          this.emit('remap', e);
          break;
        case 'remove':
          this.emit('remove', e);
          break;
        case 'unmap':
          this.emit('unmap', e);
          break;
        case 'complete':
          this.emit('complete', e);
          break;
        case 'exit':
          this.emit('exit', e);
          break;
        case 'error':
          this.emit('taskError', e);
          break;
      }
    }
  }
}
