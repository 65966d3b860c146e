/** Shapes the store returns. Stored records use the same shapes (JSON). */

export interface AddressSpaceSummary {
  mmId: string;
  /** Page map entries (64 KiB windows with at least one present page). */
  windows: number;
  /** Non-zero pages stored, and present pages that were zero (not stored). */
  pages: number;
  zeroPages: number;
  /** Page data bytes (pages * 4096). */
  bytes: number;
}

export interface ImageSummary {
  id: string;
  name: string;
  /** ISO times of beginImage() and commit(). */
  createdAt: string;
  committedAt: string;
  /** The object given to beginImage() (who was dumped, by what), as JSON. */
  info: Record<string, unknown>;
  addressSpaces: AddressSpaceSummary[];
  windows: number;
  pages: number;
  zeroPages: number;
  /** Page data of the image: pages * 4096. */
  bytes: number;
  /** Distinct chunks the image references. */
  chunks: number;
  /** Chunks and bytes this image added to the store; the rest of `bytes` was already there (or repeated within). */
  newChunks: number;
  newBytes: number;
  sharedBytes: number;
  /** sharedBytes / bytes (0 for an image without page data): the part of the image dedup saved. */
  sharedFraction: number;
  metaKeys: number;
}

export interface LoadedImage {
  id: string;
  name: string;
  summary: ImageSummary;
  /** Every metadata entry: Buffers as stored, everything else parsed from JSON. */
  meta: Map<string, unknown>;
}

export interface RemoveResult {
  id: string;
  name: string;
  /** Chunks (and their bytes) deleted because this image was their last reference. */
  freedChunks: number;
  freedBytes: number;
  /** Chunks of this image still referenced by other images or writers. */
  keptChunks: number;
}

export interface StoreStats {
  dir: string;
  images: number;
  /** Writers of this process that have begun and not finished. */
  writers: number;
  chunks: number;
  /** Page data held in chunks (uncompressed). */
  chunkBytes: number;
  /** LevelDB's estimate of the space the store occupies on disk (compressed, excludes the write-ahead log). */
  diskBytes: number;
}

export interface PageRange {
  /** Windows that overlap [from, to) are returned; defaults: 0 and 2^53. */
  from?: number;
  to?: number;
}

export interface CheckReport {
  images: number;
  pending: number;
  chunks: number;
  chunkBytes: number;
  refs: number;
  mapEntries: number;
  /** One line per inconsistency found; empty for a sound store. */
  problems: string[];
}
