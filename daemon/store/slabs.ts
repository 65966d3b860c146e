/**
 * Memory for the data of sealed windows on their way to the store: slices of large slabs, recycled once the
 * batch that holds them is written.
 *
 * Why not a fresh Buffer per window: a dump seals 16 384 windows per GiB. Fresh 64 KiB allocations cost a
 * garbage collection now and then, and on a VM whose memory is touched for the first time, every fresh
 * page is a slow fault in the hypervisor as well. Recycling a few slabs touches the same memory again and
 * again. Windows sealed into one slab are also adjacent, so a batch writes them with few, large iovecs.
 */
const SLAB_BYTES = 4 << 20;
/** Slabs kept for reuse: enough for the batch being written and the queue filling behind it. */
const KEEP_FREE = 8;

export class SlabAllocator {
  private readonly free: Buffer[] = [];
  private current: Buffer | undefined;
  private used = 0;
  /** Slabs handed out since the last cut (the current one included). */
  private owned: Buffer[] = [];

  /** `bytes` (at most a slab) of memory, valid until the slabs of the cut that includes it are released. */
  readonly alloc = (bytes: number): Buffer => {
    if (bytes > SLAB_BYTES) return Buffer.allocUnsafe(bytes);
    if (this.current === undefined || this.current.length - this.used < bytes) {
      this.current = this.free.pop() ?? Buffer.allocUnsafe(SLAB_BYTES);
      this.used = 0;
      this.owned.push(this.current);
    }
    this.used += bytes;
    return this.current.subarray(this.used - bytes, this.used);
  };

  /**
   * Hands over every slab used since the last cut; the next allocation starts a new slab. The caller gives
   * them back with release() once nothing reads the memory any more.
   */
  cut(): Buffer[] {
    const out = this.owned;
    this.owned = [];
    this.current = undefined;
    this.used = 0;
    return out;
  }

  release(slabs: Buffer[]): void {
    for (const s of slabs) if (this.free.length < KEEP_FREE) this.free.push(s);
  }
}

/**
 * Merges buffers that are adjacent in memory (consecutive slices of one slab) into single views, so that
 * a write takes a few large iovecs instead of one per window.
 */
export function coalesce(buffers: Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  for (const b of buffers) {
    const last = out[out.length - 1];
    if (last !== undefined && last.buffer === b.buffer && last.byteOffset + last.length === b.byteOffset) {
      out[out.length - 1] = Buffer.from(last.buffer, last.byteOffset, last.length + b.length);
    } else {
      out.push(b);
    }
  }
  return out;
}
