/**
 * What the API's routes need from the daemon. The daemon (daemon/service.ts) builds one and hands it to every
 * listener it runs, so the unix socket and the TCP listener serve the same store, page service and jobs.
 */
import type { PageService } from '../daemon/page-service.js';
import type { JobRegistry } from '../daemon/jobs.js';
import type { ImageStore } from '../daemon/store/index.js';
import type { DaemonMetrics } from './metrics.js';
import type { RestoreRegistry } from './restores.js';

export interface Readiness {
  /** The store is open (the daemon opened it and has not begun to close it). */
  store: boolean;
  /** The page service's thread is running. */
  pageService: boolean;
  /** Shutdown has begun: new requests get 503 SHUTTING_DOWN. */
  closing: boolean;
}

export interface ApiContext {
  store: ImageStore;
  pageService: PageService;
  jobs: JobRegistry;
  restores: RestoreRegistry;
  metrics: DaemonMetrics;
  /** The kernel's pid_max when the API was built: the largest pid a request may name. */
  pidMax: number;
  /** Date.now() when the daemon started. */
  startedAt: number;
  readiness(): Readiness;
}
