/** `lazyrestore dump`: checkpoint a running process tree into the image store (see dump.ts). */
export { dump, type DumpOptions, type DumpPhase, type DumpProgress, type DumpResult } from './dump.js';
export { defaultDataDir, defaultImageName, SYSTEM_DATA_DIR } from './defaults.js';
export * from './image.js';
