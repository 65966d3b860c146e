/**
 * Shared hugetlb objects of a restored tree (memfd_create(2) MFD_HUGETLB, mmap(2) MAP_SHARED|MAP_ANONYMOUS|
 * MAP_HUGETLB, pidfd_getfd(2), proc(5) /proc/<pid>/mem and map_files).
 *
 * Made once, by the first process that maps the object, like any shared object; what differs is how eager contents
 * get in: hugetlbfs files have no write(2) (EINVAL), so the data is written through a mapping of the object in that
 * task, with /proc/<pid>/mem, which faults the huge pages in (each a page of the object's page cache, seen by every
 * later mapping). A lazy object is left empty: its huge pages arrive through the uffds of the tasks that map it.
 */
import { ftruncateSync } from 'node:fs';
import { native } from '../../native/index.js';
import type { ShmemRecord } from '../dump/image.js';
import type { ProcTask, RestoreContext } from './context.js';
import type { NodeFiles } from './files.js';
import { writeMem } from './inject.js';
import { anonObjectInTask, writeObject } from './objects.js';
import { MAP, MAP_HUGE_SHIFT, MFD, MFD_HUGE_SHIFT, PROT, SYS } from './sys.js';

/** Creates hugetlb object `id` for the tree (its fd kept in `files`) and writes its contents when it is not lazy;
 *  returns the bytes written. */
export async function createHugeShmem(
  ctx: RestoreContext,
  task: ProcTask,
  files: NodeFiles,
  id: string,
): Promise<number> {
  const rec = ctx.img.shmem.get(id)!;
  const lazy = ctx.lazyShmem.has(id);
  const at =
    rec.kind === 'memfd' ? await createMemfd(ctx, task, files, rec, lazy) : await createAnon(ctx, task, files, rec);
  if (at === null) return 0;
  const bytes = lazy ? 0 : await writeObject(ctx, id, (off, data) => writeMem(task.memFd, at + off, data));
  const b = ctx.batch(task);
  b.call(`munmap(shared object ${id})`, SYS.munmap, [at, rec.size]);
  await b.run();
  return bytes;
}

function hugeBits(rec: ShmemRecord): number {
  return Math.log2(rec.hugePageSize!);
}

/** MAP_SHARED|MAP_ANONYMOUS|MAP_HUGETLB memory made in the task, so that it is an "/anon_hugepage (deleted)"
 *  hugetlbfs file like the original; its file is reopened through map_files and outlives the mapping. Returns
 *  where the task maps it (until createHugeShmem unmaps it). */
async function createAnon(ctx: RestoreContext, task: ProcTask, files: NodeFiles, rec: ShmemRecord): Promise<number> {
  const flags = MAP.HUGETLB | (hugeBits(rec) << MAP_HUGE_SHIFT);
  const { at, fd } = await anonObjectInTask(ctx, task, rec.id, rec.size, flags);
  files.setShmemFd(rec.id, fd);
  return at;
}

/** An MFD_HUGETLB memfd made by the restoring process with the dumped name and sealing mode. When its contents
 *  must be written, the task maps it (through pidfd_getfd of our fd) and the address is returned; else null. */
async function createMemfd(
  ctx: RestoreContext,
  task: ProcTask,
  files: NodeFiles,
  rec: ShmemRecord,
  lazy: boolean,
): Promise<number | null> {
  const sealing = rec.seals === 0 ? MFD.ALLOW_SEALING : 0;
  const fd = native.memfdCreate(rec.name ?? '', MFD.HUGETLB | (hugeBits(rec) << MFD_HUGE_SHIFT) | sealing);
  files.setShmemFd(rec.id, fd);
  ftruncateSync(fd, rec.size);
  if (lazy) return null;
  const b = ctx.batch(task);
  const pidfd = b.call('pidfd_open(restorer)', SYS.pidfd_open, [process.pid, 0]);
  const inTask = b.call(`pidfd_getfd(${fd})`, SYS.pidfd_getfd, [pidfd, fd, 0]);
  const at = b.call(`mmap(shared hugetlb object ${rec.id})`, SYS.mmap, [
    0,
    rec.size,
    PROT.READ | PROT.WRITE,
    MAP.SHARED,
    inTask,
    0,
  ]);
  b.call('close', SYS.close, [inTask]);
  b.call('close', SYS.close, [pidfd]);
  return Number((await b.run())[at.index]);
}
