/** The image store: checkpoint images in LevelDB (see docs/image-store.md). */
export { ImageStore, type RecoveredEntry, type StoreOptions } from './store.js';
export { ImageWriter, type WriterProgress } from './writer.js';
export { StoreError, isStoreError, type StoreErrorCode, type ErrnoCode } from './errors.js';
export { PAGE_SIZE, WINDOW_PAGES, WINDOW_SIZE, type PageWindow } from './pagemap.js';
export type {
  AddressSpaceSummary,
  CheckReport,
  ImageSummary,
  LoadedImage,
  PageRange,
  RemoveResult,
  StoreStats,
} from './types.js';
