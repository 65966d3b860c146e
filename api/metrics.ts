/**
 * /metrics in the Prometheus text exposition format (version 0.0.4), written by hand: the daemon exposes a
 * few dozen series and needs no registry, default process metrics or push support.
 *
 * Two sources:
 *  - counters the daemon keeps itself for its whole life (page-service events by kind as JavaScript receives
 *    them, dumps by outcome, dump durations);
 *  - a snapshot taken at scrape time: the page service's per-task statistics (only of the tasks it still
 *    holds: a task that completes or exits leaves the native statistics, so its series end with it), the
 *    store's image and chunk counts, running jobs.
 */
import type { PageServiceEvent, PageServiceTaskStats } from '../native/index.js';
import type { StoreStats } from '../daemon/store/index.js';
import type { JobKind, JobView } from '../daemon/jobs.js';

export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

const PAGE_SIZE = 4096;

type Labels = Record<string, string | number>;

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function labelText(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(String(v))}"`);
  return parts.length === 0 ? '' : `{${parts.join(',')}}`;
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/** Accumulates one exposition: a HELP and TYPE line per family, then its samples. */
export class Exposition {
  #lines: string[] = [];

  family(name: string, type: 'counter' | 'gauge' | 'histogram', help: string): this {
    this.#lines.push(`# HELP ${name} ${help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`, `# TYPE ${name} ${type}`);
    return this;
  }

  sample(name: string, value: number, labels: Labels = {}): this {
    this.#lines.push(`${name}${labelText(labels)} ${formatValue(value)}`);
    return this;
  }

  text(): string {
    return this.#lines.join('\n') + '\n';
  }
}

/** A cumulative histogram with fixed upper bounds (seconds, or whatever the caller observes). */
export class Histogram {
  readonly #bounds: number[];
  readonly #counts: number[];
  #sum = 0;
  #count = 0;

  constructor(bounds: number[]) {
    this.#bounds = [...bounds].sort((a, b) => a - b);
    this.#counts = this.#bounds.map(() => 0);
  }

  observe(v: number): void {
    this.#sum += v;
    this.#count++;
    for (let i = 0; i < this.#bounds.length; i++) if (v <= this.#bounds[i]!) this.#counts[i]!++;
  }

  write(out: Exposition, name: string, help: string): void {
    out.family(name, 'histogram', help);
    this.#bounds.forEach((le, i) => out.sample(`${name}_bucket`, this.#counts[i]!, { le: formatValue(le) }));
    out.sample(`${name}_bucket`, this.#count, { le: '+Inf' });
    out.sample(`${name}_sum`, this.#sum);
    out.sample(`${name}_count`, this.#count);
  }
}

const EVENT_KINDS: Array<PageServiceEvent['type']> = [
  'need',
  'fork',
  'remap',
  'remove',
  'unmap',
  'complete',
  'exit',
  'error',
];
const JOB_KINDS: JobKind[] = ['dump', 'restore'];
const DURATION_BOUNDS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

/** What the daemon counts for its whole life. */
export class DaemonMetrics {
  readonly events = new Map<PageServiceEvent['type'], number>(EVENT_KINDS.map((k) => [k, 0]));
  readonly dumps = { succeeded: 0, failed: 0 };
  readonly dumpSeconds = new Histogram(DURATION_BOUNDS);
  readonly dumpFrozenSeconds = new Histogram(DURATION_BOUNDS);

  countEvents(events: PageServiceEvent[]): void {
    for (const e of events) this.events.set(e.type, (this.events.get(e.type) ?? 0) + 1);
  }

  jobFinished(job: JobView): void {
    if (job.kind !== 'dump') return;
    this.dumps[job.state === 'succeeded' ? 'succeeded' : 'failed']++;
    this.dumpSeconds.observe(job.elapsedMs / 1000);
    const frozenMs = job.result?.['frozenMs'];
    if (typeof frozenMs === 'number') this.dumpFrozenSeconds.observe(frozenMs / 1000);
  }
}

/** The scrape-time state. */
export interface MetricsSnapshot {
  tasks: PageServiceTaskStats[];
  store: StoreStats | null;
  runningJobs: JobView[];
}

function writeTasks(out: Exposition, tasks: PageServiceTaskStats[]): void {
  out
    .family('lazyrestore_tasks', 'gauge', 'Tasks (userfaultfds) the page service serves')
    .sample('lazyrestore_tasks', tasks.length);
  out.family('lazyrestore_lazy_pages', 'gauge', 'Lazy pages not delivered yet, all tasks');
  out.sample(
    'lazyrestore_lazy_pages',
    tasks.reduce((n, t) => n + t.lazyPages, 0),
  );
  const perTask: Array<[string, 'counter' | 'gauge', string, (t: PageServiceTaskStats) => number]> = [
    ['lazyrestore_task_lazy_pages', 'gauge', 'Lazy pages of the task not delivered yet', (t) => t.lazyPages],
    ['lazyrestore_task_page_faults_total', 'counter', 'Page faults served for the task', (t) => t.faults],
    ['lazyrestore_task_pages_copied_total', 'counter', 'Pages placed with UFFDIO_COPY', (t) => t.pagesCopied],
    [
      'lazyrestore_task_copied_bytes_total',
      'counter',
      'Bytes placed with UFFDIO_COPY',
      (t) => t.pagesCopied * PAGE_SIZE,
    ],
    ['lazyrestore_task_pages_zeroed_total', 'counter', 'Zero pages placed with UFFDIO_ZEROPAGE', (t) => t.pagesZeroed],
  ];
  for (const [name, type, help, value] of perTask) {
    out.family(name, type, help);
    for (const t of tasks) out.sample(name, value(t), { task: t.task });
  }
  out.family('lazyrestore_task_events_total', 'counter', 'Non-cooperative userfaultfd events of the task, by kind');
  for (const t of tasks) {
    for (const [kind, n] of Object.entries(t.events))
      out.sample('lazyrestore_task_events_total', n, { task: t.task, kind });
  }
}

function writeStore(out: Exposition, store: StoreStats | null): void {
  if (store === null) return;
  out.family('lazyrestore_images', 'gauge', 'Committed images in the store').sample('lazyrestore_images', store.images);
  out.family('lazyrestore_store_chunks', 'gauge', 'Distinct page-data chunks in the store');
  out.sample('lazyrestore_store_chunks', store.chunks);
  out.family('lazyrestore_store_chunk_bytes', 'gauge', 'Page data held in chunks (uncompressed)');
  out.sample('lazyrestore_store_chunk_bytes', store.chunkBytes);
  out.family('lazyrestore_store_disk_bytes', 'gauge', "LevelDB's estimate of the store's size on disk");
  out.sample('lazyrestore_store_disk_bytes', store.diskBytes);
}

export function renderMetrics(m: DaemonMetrics, s: MetricsSnapshot): string {
  const out = new Exposition();
  writeTasks(out, s.tasks);
  out.family(
    'lazyrestore_page_service_events_total',
    'counter',
    'Page-service events received since the daemon started, by kind',
  );
  for (const [kind, n] of m.events) out.sample('lazyrestore_page_service_events_total', n, { kind });
  writeStore(out, s.store);
  out.family('lazyrestore_jobs_running', 'gauge', 'Jobs running, by kind');
  for (const kind of JOB_KINDS) {
    out.sample('lazyrestore_jobs_running', s.runningJobs.filter((j) => j.kind === kind).length, { kind });
  }
  out.family('lazyrestore_dumps_total', 'counter', 'Dumps finished since the daemon started, by outcome');
  out.sample('lazyrestore_dumps_total', m.dumps.succeeded, { outcome: 'succeeded' });
  out.sample('lazyrestore_dumps_total', m.dumps.failed, { outcome: 'failed' });
  m.dumpSeconds.write(out, 'lazyrestore_dump_duration_seconds', 'Duration of dumps, request to commit');
  m.dumpFrozenSeconds.write(out, 'lazyrestore_dump_frozen_seconds', 'How long successful dumps kept the tree frozen');
  return out.text();
}
