/**
 * Readers of /proc for `lazyrestore dump`: one module per file family, typed
 * results, synchronous. See each module for the exact file format it accepts.
 */
export * from './read.js';
export * from './maps.js';
export * from './smaps.js';
export * from './pagemap.js';
export * from './status.js';
export * from './stat.js';
export * from './tasks.js';
export * from './fds.js';
export * from './misc.js';
export * from './sysvipc.js';
