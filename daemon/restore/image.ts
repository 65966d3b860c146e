/**
 * The image as the restore reads it (docs/image-format.md): metadata loaded in one range read and checked for the
 * shape restore relies on, and the checks that must pass before anything is created: same kernel and special
 * mappings, every pid and tid free.
 */
import { existsSync, readFileSync } from 'node:fs';
import { machine, release as osRelease } from 'node:os';
import { isStoreError, type ImageStore } from '../store/index.js';
import { LazyRestoreError } from '../errors.js';
import { parseMaps } from '../proc/index.js';
import {
  IMAGE_FORMAT,
  type ImageRecord,
  type PipeRecord,
  type ProcessRecord,
  type ShmemRecord,
  type ThreadRecord,
  type TreeEntry,
  type ZombieRecord,
} from '../dump/image.js';

export interface ImageProcess {
  entry: TreeEntry;
  /** The process record; null for a zombie (see `zombie`). */
  record: ProcessRecord | null;
  zombie: ZombieRecord | null;
  /** Thread records, leader first (empty for a zombie). */
  threads: ThreadRecord[];
}

export interface RestoreImage {
  id: string;
  name: string;
  image: ImageRecord;
  /** Parents before children, root first. */
  processes: ImageProcess[];
  pipes: Map<string, PipeRecord>;
  shmem: Map<string, ShmemRecord>;
}

function corrupt(name: string, message: string): LazyRestoreError {
  return new LazyRestoreError('CORRUPT_IMAGE', `image ${name}: ${message}`);
}

function record<T>(meta: Map<string, unknown>, key: string, name: string): T {
  const v = meta.get(key);
  if (v === undefined || v === null || typeof v !== 'object' || Buffer.isBuffer(v)) {
    throw corrupt(name, `metadata ${key} is missing or not a JSON object`);
  }
  return v as T;
}

function checkThread(t: ThreadRecord, name: string): void {
  const ok =
    typeof t.regs === 'string' &&
    typeof t.xstate === 'string' &&
    typeof t.sigmask === 'string' &&
    Array.isArray(t.pending) &&
    typeof t.sigaltstack === 'object' &&
    typeof t.robustList === 'object';
  if (!ok) throw corrupt(name, `thread/${t.tid} lacks registers, signal state or robust list`);
  if (Buffer.from(t.regs, 'base64').length !== 27 * 8)
    throw corrupt(name, `thread/${t.tid}: regs are not a user_regs_struct`);
}

function checkProcess(p: ProcessRecord, name: string): void {
  const ok =
    Array.isArray(p.vmas) &&
    Array.isArray(p.fds) &&
    Array.isArray(p.sigactions) &&
    Array.isArray(p.rlimits) &&
    typeof p.mm === 'object' &&
    typeof p.creds === 'object' &&
    typeof p.exe === 'object';
  if (!ok) throw corrupt(name, `process/${p.pid} lacks memory, files, signals, limits or credentials`);
}

/** Loads the image `name` and checks that its metadata has the shape of format 1. */
export async function loadRestoreImage(store: ImageStore, name: string): Promise<RestoreImage> {
  const loaded = await store.loadImage(name);
  const meta = loaded.meta;
  const image = record<ImageRecord>(meta, 'image', name);
  if (image.format !== IMAGE_FORMAT) {
    throw new LazyRestoreError(
      'IMAGE_INCOMPATIBLE',
      `image ${name} has format ${image.format}; this restore reads format ${IMAGE_FORMAT}`,
    );
  }
  const tree = record<{ processes: TreeEntry[] }>(meta, 'tree', name);
  if (!Array.isArray(tree.processes) || tree.processes.length === 0) throw corrupt(name, 'the tree has no process');
  if (tree.processes[0]!.pid !== image.rootPid) throw corrupt(name, `the tree does not start at root ${image.rootPid}`);
  const seen = new Set<number>();
  const processes: ImageProcess[] = [];
  for (const entry of tree.processes) {
    if (entry.pid !== image.rootPid && !seen.has(entry.ppid)) {
      throw corrupt(name, `process ${entry.pid} comes before its parent ${entry.ppid}`);
    }
    seen.add(entry.pid);
    const rec = record<ProcessRecord | ZombieRecord>(meta, `process/${entry.pid}`, name);
    if (entry.state === 'zombie' || 'zombie' in rec) {
      processes.push({ entry, record: null, zombie: rec as ZombieRecord, threads: [] });
      continue;
    }
    checkProcess(rec, name);
    if (!Array.isArray(entry.tids) || entry.tids[0] !== entry.pid)
      throw corrupt(name, `process ${entry.pid}: bad thread list`);
    const threads = entry.tids.map((tid) => record<ThreadRecord>(meta, `thread/${tid}`, name));
    for (const t of threads) checkThread(t, name);
    processes.push({ entry, record: rec, zombie: null, threads });
  }
  const pipes = new Map<string, PipeRecord>();
  const shmem = new Map<string, ShmemRecord>();
  for (const [key, value] of meta) {
    if (key.startsWith('pipe/')) pipes.set(key.slice(5), value as PipeRecord);
    if (key.startsWith('shmem/')) shmem.set(key.slice(6), value as ShmemRecord);
  }
  return { id: loaded.id, name: loaded.name, image, processes, pipes, shmem };
}

/** Loads an image, turning a store failure into itself (IMAGE_NOT_FOUND, CORRUPT_IMAGE, ...). */
export async function loadImageOrThrow(store: ImageStore, name: string): Promise<RestoreImage> {
  try {
    return await loadRestoreImage(store, name);
  } catch (e) {
    if (isStoreError(e) || e instanceof LazyRestoreError) throw e;
    throw corrupt(name, e instanceof Error ? e.message : String(e));
  }
}

// The kernel gives every process the same special mappings; read once (this process's maps are long).
let specialSizes: Map<string, number> | null = null;

/** Sizes of this process's [vdso], [vvar] and [vvar_vclock]: the restorer gets the same. */
export function ownSpecialSizes(): Map<string, number> {
  if (specialSizes) return specialSizes;
  const out = new Map<string, number>();
  for (const v of parseMaps(readFileSync('/proc/self/maps', 'utf8'), '/proc/self/maps')) {
    if (v.kind === 'vdso' || v.kind === 'vvar' || v.kind === 'vvar_vclock') out.set(v.kind, v.end - v.start);
  }
  specialSizes = out;
  return out;
}

/** Refuses an image dumped on another kernel: its vDSO would not match the code that calls into it. */
export function checkCompatible(img: RestoreImage): void {
  const { kernel } = img.image;
  if (kernel.release !== osRelease() || kernel.arch !== machine()) {
    throw new LazyRestoreError(
      'IMAGE_INCOMPATIBLE',
      `image ${img.name} was dumped on Linux ${kernel.release} (${kernel.arch}); this is ${osRelease()} (${machine()})`,
    );
  }
  if (img.image.pageSize !== 4096) {
    throw new LazyRestoreError('IMAGE_INCOMPATIBLE', `image ${img.name} has ${img.image.pageSize}-byte pages`);
  }
  const here = ownSpecialSizes();
  for (const p of img.processes) {
    for (const v of p.record?.vmas ?? []) {
      if (v.content !== 'vdso' && v.content !== 'vvar' && v.content !== 'vvar_vclock') continue;
      const size = here.get(v.content);
      if (size !== v.end - v.start) {
        throw new LazyRestoreError(
          'IMAGE_INCOMPATIBLE',
          `image ${img.name}: process ${p.entry.pid} has a [${v.content}] of ${v.end - v.start} bytes, this kernel gives ${size ?? 'none'}`,
        );
      }
    }
  }
}

function holder(id: number): string {
  try {
    const comm = readFileSync(`/proc/${id}/comm`, 'utf8').trim();
    const status = readFileSync(`/proc/${id}/status`, 'utf8');
    const tgid = Number(/^Tgid:\s*(\d+)/m.exec(status)?.[1]);
    if (tgid !== id) return `a thread of process ${tgid} (${comm})`;
    if (/^State:\s*Z/m.test(status)) {
      const ppid = /^PPid:\s*(\d+)/m.exec(status)?.[1];
      return `process ${id} (${comm}), a zombie its parent ${ppid} has not reaped yet`;
    }
    return `process ${id} (${comm})`;
  } catch {
    return 'a task that just exited';
  }
}

/** Every pid and tid of the image must be free: clone3 with set_tid cannot take an id that is in use. */
export function checkIdsFree(img: RestoreImage): void {
  const pidMax = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
  for (const p of img.processes) {
    const ids = p.zombie ? [p.entry.pid] : p.entry.tids;
    for (const id of ids) {
      if (id >= pidMax) {
        throw new LazyRestoreError(
          'IMAGE_INCOMPATIBLE',
          `image ${img.name}: id ${id} is beyond this system's pid_max (${pidMax})`,
          {
            pid: p.entry.pid,
          },
        );
      }
      if (existsSync(`/proc/${id}`)) {
        const what = id === p.entry.pid ? `pid ${id}` : `tid ${id} (of process ${p.entry.pid})`;
        throw new LazyRestoreError('PID_IN_USE', `image ${img.name}: ${what} is in use by ${holder(id)}`, {
          pid: p.entry.pid,
        });
      }
    }
  }
}
