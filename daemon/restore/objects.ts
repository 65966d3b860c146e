/**
 * Writing a shared object's pages from the image through its file (pwrite(2) on a shmem file: the pages are the
 * object's, seen by every mapping of it). The object's holes stay holes.
 */
import { writeSync } from 'node:fs';
import { shmemMmId } from '../dump/image.js';
import type { RestoreContext } from './context.js';
import { PAGE } from './sys.js';

/** Writes the stored pages of shared object `id` into `fd`; returns the bytes written. */
export async function writeObject(ctx: RestoreContext, id: string, fd: number): Promise<number> {
  let bytes = 0;
  for await (const w of ctx.store.pages(ctx.img.id, shmemMmId(id))) {
    forEachDataRun(w, (addr, data) => {
      for (let done = 0; done < data.length;) done += writeSync(fd, data, done, data.length - done, addr + done);
      bytes += data.length;
    });
  }
  return bytes;
}

/** Calls fn for every run of consecutive pages with data in a window. */
export function forEachDataRun(
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
