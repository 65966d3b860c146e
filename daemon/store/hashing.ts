/**
 * Content hashes of chunks in bulk, off the JS thread: sha256(u16 LE bitmap ‖ data), as chunkHash() in
 * pagemap.ts computes one at a time. A dump hashes every byte it stores and a restore every byte it reads
 * (1 GiB takes ~0.6 s of one core); on the thread pool that runs beside the reading, copying and feeding
 * the JS thread does, and, split into a few jobs, on both cores when they are free.
 */
import { native } from '../../native/index.js';
import { popcount16, PAGE_SIZE } from './pagemap.js';

/** Bytes of chunk data per job: large enough to make the round trip negligible, small enough to spread. */
const JOB_BYTES = 2 << 20;

export interface HashItem {
  bitmap: number;
  data: Buffer;
}

/** The hex content hash of each item, in order. The items' data must not change until this settles. */
export async function hashChunks(items: HashItem[]): Promise<string[]> {
  const jobs: Array<Promise<Buffer>> = [];
  for (let first = 0; first < items.length;) {
    let bytes = 0;
    let end = first;
    while (end < items.length && (end === first || bytes + items[end]!.data.length <= JOB_BYTES)) {
      bytes += items[end]!.data.length;
      end++;
    }
    const slice = items.slice(first, end);
    jobs.push(
      native.chunkHashes(
        slice.map((i) => i.data),
        slice.map((i) => i.bitmap),
      ),
    );
    first = end;
  }
  const out: string[] = [];
  for (const digests of await Promise.all(jobs)) {
    for (let at = 0; at < digests.length; at += 32) out.push(digests.toString('hex', at, at + 32));
  }
  return out;
}

/** Whether each chunk is the one its entry names: right length and right content hash. */
export async function chunksMatch(
  items: Array<{ bitmap: number; hash: string; data: Buffer | undefined }>,
): Promise<boolean[]> {
  const ok = items.map((i) => i.data !== undefined && i.data.length === popcount16(i.bitmap) * PAGE_SIZE);
  const checked = items.filter((_, k) => ok[k]) as HashItem[];
  const hashes = await hashChunks(checked);
  let h = 0;
  return items.map((i, k) => ok[k]! && hashes[h++] === i.hash);
}
