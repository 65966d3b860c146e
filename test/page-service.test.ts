/**
 * The page service on real processes: uffd_target maps memory it never
 * wrote, hands its userfaultfd over, and verifies every byte it reads while
 * the service fills it from a PageSource holding the pattern of common.h.
 * Fork, mremap, madvise, munmap and MAP_FIXED are done by the program; the
 * service must follow them natively and report them.
 */
import { once } from 'node:events';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Worker } from 'node:worker_threads';
import { native, UFFDIO_REGISTER_MODE_MISSING, type PageServiceEvent } from '../native/index.js';
import { PageService, PageSource } from '../daemon/page-service.js';
import {
  ask,
  EVENT_FEATURES,
  EventLog,
  isEvent,
  negotiate,
  PAGE,
  patternPages,
  randomSeed,
  startTarget,
  type Target,
} from './support/uffd.js';

const MiB = 1 << 20;

function uffdUsable(t: { skip: (reason: string) => void }): boolean {
  try {
    const probe = native.uffdProbe();
    if ((probe.features & EVENT_FEATURES) !== EVENT_FEATURES) {
      t.skip('the kernel lacks UFFD_FEATURE_EVENT_FORK/REMAP/REMOVE/UNMAP');
      return false;
    }
  } catch (e) {
    t.skip(`userfaultfd unavailable: ${(e as Error).message}`);
    return false;
  }
  if (typeof native.pidfdGetfd !== 'function') {
    t.skip('pidfd_getfd is not in the addon yet');
    return false;
  }
  return true;
}

/** Puts the pattern the program expects at [addr, addr+len) into the source at origin. */
function provideRange(source: PageSource, seed: bigint, addr: number, len: number, origin = addr): void {
  const chunk = 256 * 1024;
  for (let off = 0; off < len; off += chunk) {
    const n = Math.min(chunk, len - off);
    source.provide(origin + off, patternPages(seed, addr + off, n));
  }
}

interface Served extends Target {
  seed: bigint;
  source: PageSource;
  service: PageService;
  log: EventLog;
  task: number;
}

/** A target whose whole region is lazy and served by a fresh service. */
async function serve(mib: number, provideAll = true): Promise<Served> {
  const target = await startTarget(mib);
  let service: PageService | undefined;
  try {
    negotiate(target);
    const seed = randomSeed();
    const source = new PageSource();
    if (provideAll) provideRange(source, seed, target.addr, target.len);
    const log = new EventLog();
    service = new PageService();
    service.on('event', (e) => log.push([e]));
    const task = service.addTask(target.uffd, source);
    service.addLazyRange(task, target.addr, target.len, target.addr);
    return { ...target, seed, source, service, log, task };
  } catch (e) {
    target.prog.kill();
    if (service) await service.close({ closeUffds: true });
    else native.closeFd(target.uffd);
    throw e;
  }
}

async function cleanup(s: Served): Promise<void> {
  s.prog.kill();
  await s.prog.exit();
  if (!s.service.closed) await s.service.close({ closeUffds: true });
}

function statsOf(s: Served, task = s.task) {
  return s.service.stats().find((x) => x.task === task);
}

/** Stats lag the kernel by up to one service-loop iteration: wait for a value. */
async function eventually<T>(get: () => T, ok: (v: T) => boolean, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = get();
    if (ok(v)) return v;
    if (Date.now() > deadline) assert.fail(`${what}: last value ${JSON.stringify(v)}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

test('every page arrives intact, through user and kernel-mode faults, then the task completes', async (t) => {
  if (!uffdUsable(t)) return;
  const s = await serve(8);
  try {
    // read(2) into a lazy page and write(2) from one: the kernel faults.
    assert.equal(await ask(s.prog, `kread ${s.seed} ${5 * PAGE}`), 'OK');
    assert.equal(await ask(s.prog, `kwrite ${s.seed} ${9 * PAGE}`), 'OK');
    const st = await eventually(
      () => statsOf(s),
      (x) => x?.lazyPages === s.len / PAGE - 2,
      'two pages delivered',
    );
    assert.ok(st, 'the task is listed');
    assert.equal(st.parent, null);
    assert.equal(st.pagesCopied, 2);
    assert.equal(st.faults, 2);

    // Random first touches of the rest (page 5 now holds the read(2) bytes).
    const lat = await ask(s.prog, `lat ${s.seed} ${16 * PAGE} ${s.len - 16 * PAGE}`, 'LAT');
    const [, p50, p90, p99, verdict] = lat.split(' ');
    assert.equal(verdict, 'OK');
    t.diagnostic(
      `first-touch fault latency over ${s.len / PAGE - 16} pages: p50 ${p50} ns, p90 ${p90} ns, p99 ${p99} ns`,
    );
    assert.equal(await ask(s.prog, `check ${s.seed} 0 ${5 * PAGE}`), 'OK');
    assert.equal(await ask(s.prog, `check ${s.seed} ${6 * PAGE} ${10 * PAGE}`), 'OK');

    const done = await s.log.waitFor(isEvent('complete', s.task), 'complete');
    assert.equal(done.task, s.task);
    assert.equal(statsOf(s), undefined, 'a completed task is released');
    assert.deepEqual(
      s.log.events.filter((e) => e.type === 'need' || e.type === 'error'),
      [],
    );
  } finally {
    await cleanup(s);
  }
});

test('fork: the child is served through its own uffd with the parent lazy state', async (t) => {
  if (!uffdUsable(t)) return;
  const s = await serve(4);
  try {
    assert.equal(await ask(s.prog, `check ${s.seed} 0 ${MiB}`), 'OK');
    const [, pid, status] = (await ask(s.prog, `fork ${s.seed} 0 ${s.len}`, 'FORKED')).split(' ');
    assert.equal(status, '0', `child ${pid} verified its memory`);
    const fork = await s.log.waitFor(isEvent('fork', s.task), 'fork');
    assert.ok(fork.child > s.task);
    // The child read every page: those the parent had were inherited, the
    // rest came through the child's uffd, which then had nothing lazy left.
    await s.log.waitFor(isEvent('complete', fork.child), 'child complete');
    const parent = statsOf(s);
    assert.ok(parent);
    assert.equal(parent.events.fork, 1);
    assert.equal(parent.lazyPages, (s.len - MiB) / PAGE, 'the child took no lazy page from the parent');
    assert.equal(await ask(s.prog, `check ${s.seed} 0 ${s.len}`), 'OK');
  } finally {
    await cleanup(s);
  }
});

test('mremap moves lazy state with the pages; the grown tail reads zero', async (t) => {
  if (!uffdUsable(t)) return;
  const s = await serve(4);
  try {
    // Part of the moved range is present before the move, part is lazy.
    assert.equal(await ask(s.prog, `check ${s.seed} ${MiB} ${64 * 1024}`), 'OK');
    const answer = await ask(s.prog, `mremap ${s.seed} ${MiB} ${MiB} ${2 * MiB}`, 'MREMAP');
    const [, to, verdict] = answer.split(' ');
    assert.equal(verdict, 'OK', answer);
    const remap = await s.log.waitFor(isEvent('remap', s.task), 'remap');
    assert.equal(remap.from, s.addr + MiB);
    assert.equal(remap.to, Number(to));
    assert.equal(remap.len, MiB);
    const st = await eventually(
      () => statsOf(s),
      (x) => (x?.pagesZeroed ?? 0) >= MiB / PAGE,
      'the grown tail was zero-filled',
    );
    assert.equal(st?.events.remap, 1);
    // Everything lazy left is outside the moved range.
    assert.equal(st?.lazyPages, (s.len - MiB) / PAGE);
    // What stayed behind is still served from the image.
    assert.equal(await ask(s.prog, `check ${s.seed} 0 ${MiB}`), 'OK');
    assert.equal(await ask(s.prog, `check ${s.seed} ${2 * MiB} ${2 * MiB}`), 'OK');
    await s.log.waitFor(isEvent('complete', s.task), 'complete');
  } finally {
    await cleanup(s);
  }
});

test('madvise(MADV_DONTNEED): removed pages read zero, never image data', async (t) => {
  if (!uffdUsable(t)) return;
  const s = await serve(2);
  try {
    const off = 512 * 1024;
    const len = 256 * 1024;
    assert.equal(await ask(s.prog, `madvise ${s.seed} ${off} ${len}`), 'OK');
    const remove = await s.log.waitFor(isEvent('remove', s.task), 'remove');
    assert.equal(remove.start, s.addr + off);
    assert.equal(remove.end, s.addr + off + len);
    const st = statsOf(s);
    // Half the range was read (copied) before the madvise; the other half
    // was lazy and is lazy no more.
    assert.equal(st?.lazyPages, (s.len - len) / PAGE);
    assert.equal(st?.events.remove, 1);
    assert.equal(await ask(s.prog, `check ${s.seed} 0 ${off}`), 'OK');
  } finally {
    await cleanup(s);
  }
});

test('munmap and MAP_FIXED over lazy ranges drop them; nothing is copied there', async (t) => {
  if (!uffdUsable(t)) return;
  const s = await serve(2);
  try {
    const len = 256 * 1024;
    assert.equal(await ask(s.prog, `munmap 0 ${len}`), 'OK');
    const unmap = await s.log.waitFor(isEvent('unmap', s.task), 'unmap');
    assert.deepEqual([unmap.start, unmap.end], [s.addr, s.addr + len]);

    const copiedBefore = statsOf(s)?.pagesCopied;
    assert.equal(await ask(s.prog, `mmapfixed ${MiB} ${len}`), 'OK');
    const fixed = await s.log.waitFor(
      (e): e is Extract<PageServiceEvent, { type: 'unmap' }> => isEvent('unmap', s.task)(e) && e.start === s.addr + MiB,
      'unmap of the MAP_FIXED range',
    );
    assert.equal(fixed.end, s.addr + MiB + len);
    const st = statsOf(s);
    assert.equal(st?.pagesCopied, copiedBefore, 'the new mapping got no image data');
    assert.equal(st?.lazyPages, (s.len - 2 * len) / PAGE);
    assert.equal(st?.events.unmap, 2);
    assert.equal(await ask(s.prog, `check ${s.seed} ${len} ${MiB - len}`), 'OK');
  } finally {
    await cleanup(s);
  }
});

test('a page not in memory yet raises one need, and provide() releases every waiting thread', async (t) => {
  if (!uffdUsable(t)) return;
  const target = await startTarget(1);
  const seed = randomSeed();
  const source = new PageSource();
  const log = new EventLog();
  const service = new PageService();
  service.on('event', (e) => log.push([e]));
  try {
    negotiate(target);
    // The image had this memory elsewhere: origins are not addresses.
    const origin = 0x5a0000000000;
    const task = service.addTask(target.uffd, source);
    service.addLazyRange(task, target.addr, target.len, origin);
    source.markZero(origin + 8 * PAGE, 2 * PAGE);

    target.prog.send(`threads ${seed} 4 ${3 * PAGE} ${PAGE}`);
    const need = await log.waitFor(isEvent('need', task), 'need');
    assert.deepEqual(need, {
      type: 'need',
      task,
      address: target.addr + 3 * PAGE,
      origin: origin + 3 * PAGE,
      write: false,
      source: source.id,
      len: PAGE,
    });
    source.provide(origin + 3 * PAGE, patternPages(seed, target.addr + 3 * PAGE, PAGE));
    assert.equal(await target.prog.waitFor('OK'), 'OK');
    assert.equal(log.events.filter((e) => e.type === 'need').length, 1, 'four threads, one page, one need');

    assert.equal(await ask(target.prog, `zero ${8 * PAGE} ${2 * PAGE}`), 'OK');
    assert.equal(source.bytes, PAGE);
  } finally {
    target.prog.kill();
    await service.close({ closeUffds: true });
  }
});

test('shared objects and huge-page ranges are checked where they cross into the addon', async (t) => {
  if (!uffdUsable(t)) return;
  const s = await serve(2);
  try {
    assert.throws(() => s.service.addLazyRange(s.task, s.addr, PAGE, s.addr, 99), /unknown shared object 99/);
    assert.throws(() => s.service.addSharedObject(new PageSource(), 0), /size must not be 0/);
    const obj = s.service.addSharedObject(new PageSource(), 4 * PAGE);
    const huge = 2 << 20;
    // A mapping of a hugetlb object starts at a huge page of it.
    assert.throws(() => s.service.addLazyRange(s.task, 512 * huge, huge, PAGE, obj, huge), /multiples of/);
    assert.throws(() => s.service.addLazyRange(s.task, s.addr, 3 * PAGE, s.addr, 0, 3 * PAGE), /power of two/);
    assert.throws(() => s.service.addLazyRange(s.task, 512 * huge + PAGE, huge, 0, 0, huge), /multiples of/);
  } finally {
    await cleanup(s);
  }
});

test('many threads faulting on the same pages are all woken with the right data', async (t) => {
  if (!uffdUsable(t)) return;
  const s = await serve(2);
  try {
    assert.equal(await ask(s.prog, `threads ${s.seed} 8 0 ${s.len}`), 'OK');
    await s.log.waitFor(isEvent('complete', s.task), 'complete');
    assert.deepEqual(
      s.log.events.filter((e) => e.type !== 'complete'),
      [],
    );
  } finally {
    await cleanup(s);
  }
});

test('a fork storm under concurrent faults: every child and thread reads the image', async (t) => {
  if (!uffdUsable(t)) return;
  const s = await serve(4);
  try {
    const forks = 8;
    const answer = await ask(s.prog, `forkstorm ${s.seed} ${forks} 4`, 'FORKSTORM');
    assert.equal(answer, 'FORKSTORM 0 0');
    const children = (await s.log.waitForCount(isEvent('fork', s.task), forks, 'fork events')).map((e) => e.child);
    assert.equal(children.length, forks);
    assert.equal(new Set(children).size, forks, 'every child has its own task id');
    for (const child of children) {
      // A child that read everything completes; one that exited first is reported so.
      await s.log.waitFor(
        (e): e is PageServiceEvent => (e.type === 'complete' || e.type === 'exit') && e.task === child,
        `end of child ${child}`,
      );
    }
    assert.deepEqual(
      s.log.events.filter((e) => e.type === 'error' || e.type === 'need'),
      [],
    );
  } finally {
    await cleanup(s);
  }
});

test('background copy fills a task between faults and completes it', async (t) => {
  if (!uffdUsable(t)) return;
  const s = await serve(8, false);
  try {
    // Data arrives in two halves; only what is in memory can be copied.
    provideRange(s.source, s.seed, s.addr, s.len / 2);
    s.service.setBackground(s.task, true, 64 * 1024);
    s.source.markZero(s.addr + s.len / 2, s.len / 4);
    provideRange(s.source, s.seed, s.addr + (3 * s.len) / 4, s.len / 4);
    await s.log.waitFor(isEvent('complete', s.task), 'complete');
    // The uffd is closed now: what the program reads is what was placed.
    assert.equal(await ask(s.prog, `check ${s.seed} 0 ${s.len / 2}`), 'OK');
    assert.equal(await ask(s.prog, `zero ${s.len / 2} ${s.len / 4}`), 'OK');
    assert.equal(await ask(s.prog, `check ${s.seed} ${(3 * s.len) / 4} ${s.len / 4}`), 'OK');
  } finally {
    await cleanup(s);
  }
});

test('background copy past the registered VMA drops those pages and reports ENOENT', async (t) => {
  if (!uffdUsable(t)) return;
  const target = await startTarget(1);
  const seed = randomSeed();
  const source = new PageSource();
  const log = new EventLog();
  const service = new PageService();
  service.on('event', (e) => log.push([e]));
  try {
    native.uffdApi(target.uffd, EVENT_FEATURES);
    // Only the first half is registered, but the whole region is declared lazy.
    const half = target.len / 2;
    native.uffdRegister(target.uffd, target.addr, half, UFFDIO_REGISTER_MODE_MISSING);
    provideRange(source, seed, target.addr, target.len);
    const task = service.addTask(target.uffd, source);
    service.addLazyRange(task, target.addr, target.len, target.addr);
    service.setBackground(task, true, 1 << 20);
    await log.waitFor(isEvent('complete', task), 'complete');
    const errors = log.events.filter(isEvent('error', task));
    assert.ok(errors.length >= 1, 'the dropped pages are reported');
    for (const e of errors) {
      assert.equal(e.code, 'ENOENT');
      assert.equal(e.errno, -2);
      assert.equal(e.syscall, 'ioctl');
      assert.match(e.message, /dropped/);
    }
    assert.equal(await ask(target.prog, `check ${seed} 0 ${half}`), 'OK');
  } finally {
    target.prog.kill();
    await service.close({ closeUffds: true });
  }
});

test('lazy ranges above 4 GiB are tracked exactly', async (t) => {
  if (!uffdUsable(t)) return;
  const s = await serve(5 * 1024, false);
  try {
    const far = 4 * 1024 * MiB + 123 * PAGE;
    provideRange(s.source, s.seed, s.addr + far, 4 * PAGE);
    provideRange(s.source, s.seed, s.addr, PAGE);
    assert.equal(await ask(s.prog, `check ${s.seed} ${far} ${4 * PAGE}`), 'OK');
    assert.equal(await ask(s.prog, `check ${s.seed} 0 ${PAGE}`), 'OK');
    await eventually(
      () => statsOf(s)?.lazyPages,
      (n) => n === s.len / PAGE - 5,
      'five pages delivered',
    );
  } finally {
    await cleanup(s);
  }
});

test('releaseTask stops serving a task; an exited task is reported', async (t) => {
  if (!uffdUsable(t)) return;
  const s = await serve(1);
  const other = await startTarget(1);
  try {
    s.service.releaseTask(s.task);
    negotiate(other);
    const task2 = s.service.addTask(other.uffd, s.source);
    s.service.addLazyRange(task2, other.addr, other.len, other.addr);
    other.prog.kill();
    await other.prog.exit();
    await s.log.waitFor(isEvent('exit', task2), 'exit');
    assert.deepEqual(s.service.stats(), []);
  } finally {
    other.prog.kill();
    await cleanup(s);
  }
});

test('close() with a fault parked resolves once the program is gone; the service is then unusable', async (t) => {
  if (!uffdUsable(t)) return;
  const s = await serve(1, false);
  try {
    s.prog.send(`check ${s.seed} 0 ${PAGE}`);
    await s.log.waitFor(isEvent('need', s.task), 'need');
    s.prog.kill();
    await s.prog.exit();
    await s.service.close({ closeUffds: true });
    assert.equal(s.service.closed, true);
    assert.throws(() => s.service.stats(), /closed/);
    assert.throws(() => s.service.addLazyRange(s.task, s.addr, PAGE, s.addr), /closed/);
  } finally {
    await cleanup(s);
  }
});

/** A gc() usable inside node:test without --expose-gc on the command line. */
function getGc(): (() => void) | undefined {
  try {
    setFlagsFromString('--expose-gc');
    return runInNewContext('gc') as () => void;
  } catch {
    return undefined;
  }
}

async function collect(gc: () => void, collected: () => boolean): Promise<boolean> {
  for (let i = 0; i < 50 && !collected(); i++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
  return collected();
}

test('a PageSource collected by the GC stays alive for the task that uses it', async (t) => {
  if (!uffdUsable(t)) return;
  const gc = getGc();
  if (!gc) {
    t.skip('cannot obtain gc() in this process');
    return;
  }
  const target = await startTarget(1);
  const service = new PageService();
  let gone = false;
  const registry = new FinalizationRegistry(() => (gone = true));
  const seed = randomSeed();
  try {
    negotiate(target);
    (() => {
      const source = new PageSource();
      provideRange(source, seed, target.addr, target.len);
      const task = service.addTask(target.uffd, source);
      service.addLazyRange(task, target.addr, target.len, target.addr);
      registry.register(source.handle, 'source');
    })();
    if (!(await collect(gc, () => gone))) {
      t.skip('the GC did not collect the source handle');
      return;
    }
    assert.equal(await ask(target.prog, `check ${seed} 0 ${target.len}`), 'OK');
  } finally {
    target.prog.kill();
    await service.close({ closeUffds: true });
  }
});

test('a service handle collected without close() stops its thread and leaves the uffd open', async (t) => {
  if (!uffdUsable(t)) return;
  const gc = getGc();
  if (!gc) {
    t.skip('cannot obtain gc() in this process');
    return;
  }
  // The PageService class is kept alive by its own event callback (the
  // native side holds it while the service runs); a raw handle whose
  // callback does not refer to it is what can be collected.
  const target = await startTarget(1);
  let gone = false;
  const registry = new FinalizationRegistry(() => (gone = true));
  try {
    negotiate(target);
    (() => {
      const handle = native.pageServiceOpen(() => {});
      const task = native.pageServiceAddTask(handle, target.uffd, native.pageSourceCreate());
      native.pageServiceAddLazyRange(handle, task, target.addr, target.len, target.addr);
      registry.register(handle, 'service');
    })();
    if (!(await collect(gc, () => gone))) {
      t.skip('the GC did not collect the service handle');
      return;
    }
    // The finalizer joined the thread and left the uffd to us: it is still open.
    target.prog.kill();
    await target.prog.exit();
    native.closeFd(target.uffd);
  } finally {
    target.prog.kill();
  }
});

test('a worker torn down while its service serves a task neither crashes nor hangs', async (t) => {
  if (!uffdUsable(t)) return;
  const target = await startTarget(1);
  try {
    negotiate(target);
    const code = `
      const { parentPort, workerData } = require('node:worker_threads');
      import(workerData.url).then(({ native }) => {
        const h = native.pageServiceOpen(() => {});
        const task = native.pageServiceAddTask(h, workerData.uffd, native.pageSourceCreate());
        native.pageServiceAddLazyRange(h, task, workerData.addr, workerData.len, workerData.addr);
        parentPort.postMessage('serving');
      });`;
    const url = new URL('../native/index.js', import.meta.url).href;
    const worker = new Worker(code, {
      eval: true,
      workerData: { url, uffd: target.uffd, addr: target.addr, len: target.len },
    });
    const [message] = (await once(worker, 'message')) as [string];
    assert.equal(message, 'serving');
    // The service holds a task, so the worker would run forever: end it.
    await worker.terminate();
    // Its cleanup hook joined the service thread and left the uffd open.
    target.prog.kill();
    await target.prog.exit();
    native.closeFd(target.uffd);
  } finally {
    target.prog.kill();
  }
});
