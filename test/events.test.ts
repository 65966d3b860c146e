/**
 * The non-cooperative userfaultfd events in restored processes, one by one (test/programs/diff_events.c): each
 * workload is dumped, restored lazily through a page service of the test, and acts at once, racing the background
 * copy; it checks every page itself. Also: a restored task killed while its background copy is in flight, and
 * the refusal of lazy restore on a kernel whose userfaultfd lacks one of the events.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ImageStore } from '../daemon/store/index.js';
import { dump } from '../daemon/dump/index.js';
import { restoreImage, type RestoreCompletion } from '../daemon/restore/index.js';
import { checkLazyFeatures, LAZY_FEATURES } from '../daemon/restore/lazy.js';
import { isLazyRestoreError } from '../daemon/errors.js';
import { UFFD_FEATURES, type PageServiceTaskStats, type PageServiceTotals, type RestoreExit } from '../native/index.js';
import { keepAlive, killAll, leftOver, tempDir, until, Workload } from './support/restore.js';
import { countingService, type EventCounts } from './support/differential.js';

const MIB = 128;
const tmp = tempDir('events');
let store: ImageStore;

before(async () => {
  store = await ImageStore.open(join(tmp.path, 'store'));
});

after(async () => {
  await store?.close();
  tmp.remove();
});

interface Run {
  output: string;
  counts: EventCounts;
  finals: PageServiceTaskStats[];
  totals: PageServiceTotals;
  completion: RestoreCompletion;
  exit: RestoreExit;
}

/** Dumps `diff_events mode`, restores it lazily with its go file already there, and waits until it exits. */
async function restoredRun(mode: string, mib = MIB): Promise<Run> {
  const go = join(tmp.path, `go-${mode}`);
  const w = new Workload(join(tmp.path, `${mode}.txt`), 'diff_events', [mode, String(mib), go]);
  const { service, counts, errors, finals } = countingService();
  let pid = 0;
  try {
    pid = await w.started();
    await w.waitOutput(/^READY \d+$/m);
    await dump(store, pid, { name: `events-${mode}` });
    await w.reaped();
    writeFileSync(go, '');
    const tree = await restoreImage(store, `events-${mode}`, { pageService: service });
    const completion = await keepAlive(tree.complete);
    const exit = await keepAlive(tree.exited);
    assert.deepEqual(errors, [], `page service errors in ${mode}`);
    assert.equal(service.stats().length, 0, 'the service holds no task any more');
    return { output: w.output(), counts, finals, totals: service.totals(), completion, exit };
  } finally {
    w.kill();
    killAll([pid]);
    await service.close({ closeUffds: true });
  }
}

async function expectOk(mode: string, mib = MIB): Promise<Run> {
  const run = await restoredRun(mode, mib);
  assert.equal(run.exit.kind, 'exited', run.output);
  assert.match(run.output, new RegExp(`^OK ${mode}$`, 'm'), run.output);
  assert.equal(run.exit.status, 0, run.output);
  assert.deepEqual(run.completion.errors, []);
  return run;
}

test('FORK: a child forked while memory is lazy inherits it, and both read every page', async () => {
  const run = await expectOk('fork');
  assert.ok(run.counts.fork >= 1, `fork events: ${JSON.stringify(run.counts)}`);
});

test('FORK: a grandchild forked by a lazy child reads every page too', async () => {
  const run = await expectOk('grandchildren');
  assert.ok(run.counts.fork >= 2, `fork events: ${JSON.stringify(run.counts)}`);
});

test('vfork: the child shares the lazy address space (no fork event of its own) and execs', async () => {
  const run = await expectOk('vfork');
  assert.equal(run.counts.fork, 0, 'a vfork child shares its parent mm: no new uffd');
});

test('FORK: twenty children exiting at once leave the parent lazy state intact', async () => {
  const run = await expectOk('exitnow');
  assert.ok(run.counts.fork >= 1, `fork events: ${JSON.stringify(run.counts)}`);
});

test('FORK: a storm of 100 children at once, each checking its slice of lazy memory', async (t) => {
  const run = await expectOk('storm');
  assert.ok(run.counts.fork >= 1, `fork events: ${JSON.stringify(run.counts)}`);
  // Every task the service held (the root and each child it saw forked) left with its final counters, and the
  // service-wide totals are their sums.
  const { totals, finals } = run;
  assert.equal(totals.tasks, 1 + run.counts.fork);
  assert.equal(finals.length, totals.tasks);
  assert.equal(totals.events.fork, run.counts.fork);
  assert.equal(totals.lazyPages, 0);
  for (const k of ['faults', 'pagesCopied', 'pagesZeroed'] as const) {
    assert.equal(
      totals[k],
      finals.reduce((n, s) => n + s[k], 0),
      k,
    );
  }
  const timed = totals.faultLatencyUs.reduce((n, c) => n + c, 0);
  assert.ok(timed > 0 && timed <= totals.faults, `${timed} timed faults of ${totals.faults}`);
  t.diagnostic(`fault latency (log2 µs buckets): ${JSON.stringify(totals.faultLatencyUs)}`);
});

test('REMAP: lazy ranges move, grow (zeros) and shrink with mremap, in the task and a child', async () => {
  const run = await expectOk('remap');
  assert.ok(run.counts.remap >= 1, `remap events: ${JSON.stringify(run.counts)}`);
});

test('REMOVE: MADV_DONTNEED over lazy pages reads zero, here and in a child forked later', async () => {
  const run = await expectOk('remove');
  assert.ok(run.counts.remove >= 1, `remove events: ${JSON.stringify(run.counts)}`);
});

test('UNMAP: munmap, MAP_FIXED over and an mremap target: nothing is copied there again', async () => {
  const run = await expectOk('unmap');
  assert.ok(run.counts.unmap >= 1, `unmap events: ${JSON.stringify(run.counts)}`);
});

test('duplicate faults: eight threads fault on one lazy page at once, over sixteen pages', async () => {
  await expectOk('threads');
});

test('copies crossing VMA boundaries: the lazy VMA split in hundreds under the background copy', async () => {
  await expectOk('split');
});

test('a task exiting while its threads fault all over lazy memory is let go, exit reported', async () => {
  const run = await expectOk('exitfaulting');
  assert.ok(run.counts.exit + run.counts.complete >= 1, JSON.stringify(run.counts));
  assert.equal(run.finals.length, run.totals.tasks, 'every task left with its final counters');
});

test('a task killed while its background copy is in flight is released; the service goes on', async () => {
  const go = join(tmp.path, 'go-killed');
  const w = new Workload(join(tmp.path, 'killed.txt'), 'diff_events', ['fork', '256', go]);
  const { service, counts, errors, finals } = countingService();
  let pid = 0;
  try {
    pid = await w.started();
    await w.waitOutput(/^READY \d+$/m);
    await dump(store, pid, { name: 'events-killed' });
    await w.reaped();
    // No go file: the task sleeps while the service copies in the background.
    const tree = await restoreImage(store, 'events-killed', { pageService: service, backgroundChunkBytes: 64 << 10 });
    const copying = await until('pages copied in the background', () => {
      const st = service.stats().find((s) => s.pagesCopied > 0);
      return st && st.lazyPages > 0 ? st : undefined;
    });
    process.kill(pid, 'SIGKILL');
    const exit = await keepAlive(tree.exited);
    assert.equal(exit.kind, 'signaled');
    const completion = await keepAlive(tree.complete);
    assert.deepEqual(completion.errors, []);
    assert.deepEqual(errors, []);
    assert.ok(copying.lazyPages > 0);
    await until('the task released', () => (service.stats().length === 0 ? true : undefined));
    assert.equal(counts.exit + counts.complete, 1, JSON.stringify(counts));
    assert.equal(finals.length, 1);
    assert.ok(finals[0]!.pagesCopied >= copying.pagesCopied, 'the final counters are the last ones');
    if (counts.exit === 1) assert.ok(finals[0]!.lazyPages > 0, 'killed with pages still lazy');
    assert.equal(service.totals().tasks, 1);
    assert.deepEqual(await leftOver([pid]), []);
  } finally {
    w.kill();
    killAll([pid]);
    await service.close({ closeUffds: true });
  }
});

test('lazy restore is refused, naming the feature, when the userfaultfd lacks an event', () => {
  assert.doesNotThrow(() => checkLazyFeatures(LAZY_FEATURES));
  const noRemap = LAZY_FEATURES & ~UFFD_FEATURES.UFFD_FEATURE_EVENT_REMAP;
  assert.throws(
    () => checkLazyFeatures(noRemap),
    (e: unknown) =>
      isLazyRestoreError(e) &&
      e.code === 'LAZY_UNSUPPORTED' &&
      e.message.includes('UFFD_FEATURE_EVENT_REMAP') &&
      !e.message.includes('UFFD_FEATURE_EVENT_FORK') &&
      e.message.includes('--eager'),
  );
  assert.throws(
    () => checkLazyFeatures(0),
    (e: unknown) =>
      isLazyRestoreError(e) &&
      ['FORK', 'REMAP', 'REMOVE', 'UNMAP'].every((k) => e.message.includes(`UFFD_FEATURE_EVENT_${k}`)),
  );
});
