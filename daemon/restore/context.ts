/**
 * State shared by the steps of one restore: the tracer, the image, one {@link ProcTask} per process being built,
 * what the restoring process holds for it (files, pipes, uffds), and notes for the summary.
 */
import type { ImageStore } from '../store/index.js';
import type { Tracer } from '../tracer.js';
import type { ThreadRecord } from '../dump/image.js';
import { Batch } from './inject.js';
import type { ImageProcess, RestoreImage } from './image.js';
import type { SysvSegmentPlan } from './sysv.js';

/** Where the restorer's own `syscall; int3` is, relative to its entry point (native/restorer/restorer.S). */
export const HELPER_GADGET_OFFSET = 2;
/** The region mapped in each process for the gadget (first page) and the scratch area (the rest). */
export const REGION_SIZE = 64 * 4096;

export interface ProcTask {
  pid: number;
  image: ImageProcess;
  /** Thread ids created so far, leader first. */
  tids: number[];
  /** Where injected syscalls run, and the scratch area (the helper's stack at first, then our region). */
  gadget: number;
  scratch: { start: number; size: number };
  /** Our region once mapped (unmapped as the very last step). */
  region: { start: number; size: number } | null;
  memFd: number;
  /** Page service task ids of this process's uffd (lazy restore). */
  serviceTask: number | null;
  /** fd number, in the task, of its pidfd for the restoring process (between the layout and the last step). */
  restorerPidfd: number | null;
}

export interface RestoreStepOptions {
  eager: boolean;
}

export class RestoreContext {
  readonly tasks = new Map<number, ProcTask>();
  readonly notes: string[] = [];
  /** Shared objects left lazy (see planLazyShmem); the others are written before the tree runs. */
  lazyShmem = new Set<string>();
  /** Hugetlb memory is left lazy (the kernel offers UFFD_FEATURE_MISSING_HUGETLBFS); else written eagerly. */
  lazyHuge = false;
  /** System V segments of the image, by shared object id (see planSysv). */
  sysv = new Map<string, SysvSegmentPlan>();
  /** Ids of the System V segments this restore created, removed again if it fails. */
  readonly sysvCreated: number[] = [];

  constructor(
    readonly store: ImageStore,
    readonly img: RestoreImage,
    readonly tracer: Tracer,
    readonly options: RestoreStepOptions,
  ) {}

  get root(): ProcTask {
    const t = this.tasks.get(this.img.image.rootPid);
    if (!t) throw new Error('the root process has not been created');
    return t;
  }

  task(pid: number): ProcTask {
    const t = this.tasks.get(pid);
    if (!t) throw new Error(`process ${pid} has not been created`);
    return t;
  }

  /** A batch of syscalls for thread `tid` (default: the leader) of `task`. */
  batch(task: ProcTask, tid = task.pid): Batch {
    return new Batch(
      this.tracer,
      { pid: task.pid, gadget: task.gadget, scratch: task.scratch, memFd: task.memFd },
      tid,
    );
  }

  thread(task: ProcTask, tid: number): ThreadRecord {
    const t = task.image.threads.find((r) => r.tid === tid);
    if (!t) throw new Error(`process ${task.pid} has no thread ${tid} in the image`);
    return t;
  }

  /** Every tid created so far, processes in creation order. */
  allTids(): number[] {
    return [...this.tasks.values()].flatMap((t) => t.tids);
  }
}
