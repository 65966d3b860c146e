/**
 * Shared objects of a restore (mmap(2), pwrite(2), proc(5) map_files): the file of one made in a task, and its
 * pages written from the image, each run of pages through a writer given by offset in the object (pwrite on a
 * shmem file, or a mapping of it for hugetlbfs, which has no write(2)). The object's holes stay holes.
 */
import { openSync, writeSync } from 'node:fs';
import { shmemMmId } from '../dump/image.js';
import { mapFilesPath } from '../proc/index.js';
import type { ProcTask, RestoreContext } from './context.js';
import { MAP, PAGE, PROT, SYS } from './sys.js';

/** Writes `data` at `offset` of a shared object. */
export type ObjectWriter = (offset: number, data: Buffer) => void;

/** A writer through the object's file. */
export function fileWriter(fd: number): ObjectWriter {
  return (offset, data) => {
    for (let done = 0; done < data.length;) done += writeSync(fd, data, done, data.length - done, offset + done);
  };
}

/** Writes the stored pages of shared object `id` through `write`; returns the bytes written. */
export async function writeObject(ctx: RestoreContext, id: string, write: ObjectWriter): Promise<number> {
  let bytes = 0;
  for await (const w of ctx.store.pages(ctx.img.id, shmemMmId(id))) {
    forEachDataRun(w, (offset, data) => {
      write(offset, data);
      bytes += data.length;
    });
  }
  return bytes;
}

/**
 * Shared anonymous memory (`flags` adds MAP_HUGETLB and its size for hugetlb) made in the task, so that its file is
 * one like the original's (/dev/zero or /anon_hugepage, deleted); returns where the task maps it (the caller unmaps
 * it) and a read-write fd of its file, reopened through map_files, which outlives the mapping.
 */
export async function anonObjectInTask(
  ctx: RestoreContext,
  task: ProcTask,
  id: string,
  size: number,
  flags = 0,
): Promise<{ at: number; fd: number }> {
  const b = ctx.batch(task);
  const prot = PROT.READ | PROT.WRITE;
  b.call(`mmap(shared object ${id})`, SYS.mmap, [0, size, prot, MAP.SHARED | MAP.ANONYMOUS | flags, -1, 0]);
  const at = Number((await b.run())[0]);
  return { at, fd: openSync(mapFilesPath(task.pid, { start: at, end: at + size }), 'r+') };
}

/** Calls fn for every run of consecutive pages with data in a window. */
function forEachDataRun(
  w: { address: number; bitmap: number; data: Buffer },
  fn: (address: number, data: Buffer) => void,
): void {
  let k = 0;
  let runStart = -1;
  let runData = 0;
  const flush = (): void => {
    if (runStart >= 0) fn(runStart, w.data.subarray(runData * PAGE, k * PAGE));
    runStart = -1;
  };
  for (let i = 0; i < 16; i++) {
    const addr = w.address + i * PAGE;
    if (w.bitmap & (1 << i)) {
      if (runStart < 0) {
        runStart = addr;
        runData = k;
      }
      k++;
    } else flush();
  }
  flush();
}
