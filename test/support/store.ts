/** Helpers for tests that damage an image store by hand (docs/image-store.md describes the layout). */
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { decodeLocation } from '../../daemon/store/packs.js';

/** Flips byte `at` of the chunk whose chunk! value is `location`, in its pack file under `storeDir`. */
export function corruptChunkByte(storeDir: string, location: Buffer, at: number): void {
  const loc = decodeLocation(location);
  if (loc === undefined) throw new Error('not a chunk location');
  const fd = openSync(join(storeDir, 'packs', loc.pack), 'r+');
  try {
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, loc.offset + at);
    b[0] = b[0]! ^ 0xff;
    writeSync(fd, b, 0, 1, loc.offset + at);
  } finally {
    closeSync(fd);
  }
}
