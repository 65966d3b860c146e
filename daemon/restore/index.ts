/** `lazyrestore restore`: recreate a dumped tree, memory on demand (see restore.ts). */
export {
  restoreImage,
  type RestoreCompletion,
  type RestoredProcess,
  type RestoredTree,
  type RestoreOptions,
} from './restore.js';
export { sourceCache, LAZY_FEATURES } from './lazy.js';
export { restorerPath } from './tree.js';
