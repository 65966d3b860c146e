/**
 * `lazyrestore dump` on real processes (test/programs/dump_*.c): the image is checked against what the
 * programs report about themselves and against their memory as /proc/<pid>/mem shows it after the dump (they
 * stop changing memory once set up, and --leave-running lets them go on); refusals leave the target running
 * unchanged and no image behind; dumps without --leave-running kill the tree.
 */
import { test } from 'node:test';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import assert from 'node:assert/strict';
import {
  closeSync,
  constants,
  existsSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { native } from '../native/index.js';
import { Regs } from '../daemon/regs.js';
import { ImageStore } from '../daemon/store/index.js';
import { dump } from '../daemon/dump/index.js';
import type { FdRecord, PipeRecord, ProcessRecord, ThreadRecord, TreeRecord } from '../daemon/dump/index.js';
import { isLazyRestoreError } from '../daemon/errors.js';
import { Program, programPath } from './support/programs.js';
import { HugePages } from './support/hugepages.js';

const PAGE = 4096;
const SIGRTMIN = 34;

function dumpUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'dumping other processes needs root (ptrace, /proc/<pid>/mem, map_files)';
  try {
    if (readFileSync('/proc/sys/kernel/yama/ptrace_scope', 'utf8').trim() === '3') return 'ptrace is disabled (yama)';
  } catch {
    // no Yama
  }
  if (!existsSync('/proc/self/task/' + process.pid + '/children')) return 'needs CONFIG_PROC_CHILDREN';
  return null;
}
const skip = dumpUnavailable() ?? false;

/** A started workload with the fields of its READY line. */
interface Started {
  prog: Program;
  pid: number;
  f: Map<string, string>;
  num(key: string): number;
  addr(key: string): number;
}

async function start(name: string, args: string[] = []): Promise<Started> {
  const prog = new Program(name, args);
  const f = new Map<string, string>();
  try {
    for (const kv of (await prog.waitFor('READY')).split(' ').slice(1)) {
      const i = kv.indexOf('=');
      f.set(kv.slice(0, i), kv.slice(i + 1));
    }
  } catch (e) {
    prog.kill();
    throw e;
  }
  const get = (k: string): string => {
    const v = f.get(k);
    if (v === undefined) throw new Error(`READY has no ${k}`);
    return v;
  };
  return {
    prog,
    pid: Number(get('pid')),
    f,
    num: (k) => Number(get(k)),
    addr: (k) => Number.parseInt(get(k), 16),
  };
}

/** Runs `fn` with a fresh store in a temporary directory; the store must be sound afterwards. */
async function withStore(fn: (store: ImageStore, dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'lazyrestore-dump-'));
  const store = await ImageStore.open(dir);
  try {
    await fn(store, dir);
    assert.deepEqual((await store.check()).problems, []);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function ask(s: Started, cmd: string, prefix: string): Promise<string> {
  s.prog.send(cmd);
  return s.prog.waitFor(prefix);
}

function stateOf(tid: number): string {
  const stat = readFileSync(`/proc/${tid}/stat`, 'latin1');
  return stat.charAt(stat.lastIndexOf(')') + 2);
}

/** Neither the process nor any of its threads is stopped (State t or T). */
function assertRunning(pid: number): void {
  for (const tid of readdirSync(`/proc/${pid}/task`).map(Number)) {
    assert.ok(!['t', 'T'].includes(stateOf(tid)), `thread ${tid} of ${pid} is ${stateOf(tid)}`);
  }
}

function readMem(pid: number, address: number, length: number): Buffer {
  const fd = openSync(`/proc/${pid}/mem`, 'r');
  try {
    const buf = Buffer.alloc(length);
    const n = readSync(fd, buf, 0, length, address);
    assert.equal(n, length, `short read of /proc/${pid}/mem at 0x${address.toString(16)}`);
    return buf;
  } finally {
    closeSync(fd);
  }
}

interface PageState {
  present: boolean;
  data: Buffer | null;
}

/** Every page the image recorded for `mmId`, by address. */
async function imagePages(store: ImageStore, id: string, mmId: string): Promise<Map<number, PageState>> {
  const out = new Map<number, PageState>();
  for await (const w of store.pages(id, mmId)) {
    let k = 0;
    for (let i = 0; i < 16; i++) {
      if (!(w.present & (1 << i))) continue;
      const data = w.bitmap & (1 << i) ? w.data.subarray(k * PAGE, ++k * PAGE) : null;
      out.set(w.address + i * PAGE, { present: true, data });
    }
  }
  return out;
}

type Hole = { start: number; len: number };

/**
 * The fields of each thread's struct rseq that the kernel itself rewrites whenever the thread returns to user
 * space on another CPU (cpu_id_start, cpu_id at 0..8; node_id, mm_cid at 20..28): not compared.
 */
function rseqHoles(img: { meta: Map<string, unknown> }, pid: number): Hole[] {
  const out: Hole[] = [];
  for (const [key, value] of img.meta) {
    const t = value as ThreadRecord;
    if (!key.startsWith('thread/') || t.pid !== pid || t.rseq === null) continue;
    out.push({ start: t.rseq.ptr, len: 8 }, { start: t.rseq.ptr + 20, len: 8 });
  }
  return out;
}

function maskOut(buf: Buffer, address: number, holes: Hole[]): Buffer {
  const copy = Buffer.from(buf);
  for (const h of holes) {
    const from = Math.max(h.start, address);
    const to = Math.min(h.start + h.len, address + buf.length);
    if (from < to) copy.fill(0, from - address, to - address);
  }
  return copy;
}

/** Compares every page the image stored for process `pid` with its memory now; returns them by address. */
async function compareWithMemory(
  store: ImageStore,
  img: { id: string; meta: Map<string, unknown> },
  pid: number,
): Promise<Map<number, PageState>> {
  const mmId = `mm:${pid}`;
  const holes = rseqHoles(img, pid);
  const pages = await imagePages(store, img.id, mmId);
  assert.ok(pages.size > 0, `no pages stored for ${mmId}`);
  for (const [address, p] of pages) {
    const mem = maskOut(readMem(pid, address, PAGE), address, holes);
    const expected = p.data === null ? Buffer.alloc(PAGE) : maskOut(p.data, address, holes);
    assert.ok(mem.equals(expected), `${mmId} page 0x${address.toString(16)} differs from the process's memory`);
  }
  return pages;
}

function meta<T>(img: { meta: Map<string, unknown> }, key: string): T {
  const v = img.meta.get(key);
  assert.ok(v !== undefined, `image has no ${key}`);
  return v as T;
}

function siginfo(b64: string): { signo: number; code: number; value: number } {
  const b = Buffer.from(b64, 'base64');
  assert.equal(b.length, 128);
  return { signo: b.readInt32LE(0), code: b.readInt32LE(8), value: b.readInt32LE(24) };
}

function fdOf(p: ProcessRecord, fd: number): FdRecord {
  const r = p.fds.find((x) => x.fd === fd);
  assert.ok(r, `fd ${fd} not recorded`);
  return r;
}

interface ThreadFacts {
  tid: number;
  mask: bigint;
  ctid: number;
  robust: number;
  rseq: number;
  altsp: number;
  altsize: number;
}

async function threadFacts(
  s: Started,
): Promise<{ threads: ThreadFacts[]; sigacts: Map<number, [string, string, string]> }> {
  s.prog.send('info');
  const threads: ThreadFacts[] = [];
  const sigacts = new Map<number, [string, string, string]>();
  for (;;) {
    const line = await s.prog.waitFor('');
    if (line === 'INFO END') break;
    const f = new Map(
      line
        .split(' ')
        .slice(1)
        .map((kv) => kv.split('=') as [string, string]),
    );
    const get = (k: string): string => f.get(k) ?? assert.fail(`${k} missing in ${line}`);
    if (line.startsWith('THREAD')) {
      threads.push({
        tid: Number(get('tid')),
        mask: BigInt(get('mask')),
        ctid: Number(get('ctid')),
        robust: Number(get('robust')),
        rseq: Number(get('rseq')),
        altsp: Number(get('altsp')),
        altsize: Number(get('altsize')),
      });
    } else if (line.startsWith('SIGACT')) {
      sigacts.set(Number(get('signo')), [get('handler'), get('flags'), get('mask')]);
    }
  }
  return { threads, sigacts };
}

function syscallInsnAt(pid: number, rip: bigint): boolean {
  return readMem(pid, Number(rip), 2).equals(Buffer.from([0x0f, 0x05]));
}

test('dump --leave-running of a multi-threaded process: memory, threads, signals and files', { skip }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'lazyrestore-dump-work-'));
  const s = await start('dump_threads', [work]);
  try {
    await withStore(async (store) => {
      const before = await threadFacts(s);
      const posBefore = readFileSync(`/proc/${s.pid}/fdinfo/${s.num('fdrw')}`, 'utf8');
      const r = await dump(store, s.pid, { leaveRunning: true });
      assert.equal(r.leftRunning, true);
      assert.equal(r.processes, 1);
      assert.equal(r.threads, 5);
      assertRunning(s.pid);
      const img = await store.loadImage(r.name);

      // Threads: ids, registers, masks, pending signals, alternate stacks, rseq, robust lists, clear_child_tid.
      const tree = meta<TreeRecord>(img, 'tree');
      const tids = [s.num('main'), s.num('spin'), s.num('w1'), s.num('w2'), s.num('susp')];
      assert.deepEqual(tree.processes, [
        {
          pid: s.pid,
          ppid: s.prog.pid,
          pgid: tree.processes[0]!.pgid,
          sid: tree.processes[0]!.sid,
          tids,
          state: 'running',
        },
      ]);
      const thread = (tid: number) => meta<ThreadRecord>(img, `thread/${tid}`);
      const regs = (tid: number) => new Regs(Buffer.from(thread(tid).regs, 'base64'));
      const spin = regs(s.num('spin'));
      assert.equal(spin.r12, 0x1111222233334444n);
      assert.equal(spin.r13, 0x5555666677778888n);
      assert.equal(spin.r14, 0x99990000aaaabbbbn);
      assert.equal(spin.r15, 0xccccddddeeeeffffn);
      for (const [tid, nr] of [
        [s.num('main'), 0n], // read(2) of the next command
        [s.num('w1'), 202n], // futex(2) in pthread_cond_wait
        [s.num('w2'), 202n],
        [s.num('susp'), 130n], // rt_sigsuspend(2)
      ] as const) {
        const g = regs(tid);
        assert.equal(g.orig_rax, nr, `tid ${tid} is in syscall ${nr}`);
        assert.equal(g.rax, nr, `tid ${tid}: an interrupted syscall is stored to be re-issued`);
        assert.ok(syscallInsnAt(s.pid, g.rip), `tid ${tid}: rip points at its syscall instruction`);
      }
      for (const f of before.threads) {
        const t = thread(f.tid);
        // For the thread in sigsuspend: its own mask, not the temporary one sigsuspend runs with.
        assert.equal(BigInt(t.sigmask), f.mask, `sigmask of ${f.tid}`);
        assert.equal(t.clearChildTid, f.ctid, `clear_child_tid of ${f.tid}`);
        assert.deepEqual(t.robustList, { head: f.robust, len: 24 }, `robust list of ${f.tid}`);
        assert.equal(t.rseq?.ptr ?? 0, f.rseq, `rseq of ${f.tid}`);
        if (t.rseq) assert.equal(t.rseq.sig, 0x53053053);
        if (f.altsize > 0) assert.deepEqual(t.sigaltstack, { sp: f.altsp, flags: 0, size: f.altsize });
        else assert.equal(t.sigaltstack.flags, 2, `SS_DISABLE for ${f.tid}`);
        assert.equal(Buffer.from(t.xstate, 'base64').length >= 576, true);
      }
      const w1 = thread(s.num('w1')).pending.map(siginfo);
      assert.deepEqual(w1, [{ signo: SIGRTMIN + 3, code: -1, value: 0x5678 }]);
      assert.deepEqual(thread(s.num('w2')).pending, []);

      // The process: signal dispositions, shared pending signals, files, creds, mm.
      const proc = meta<ProcessRecord>(img, `process/${s.pid}`);
      assert.deepEqual(proc.sharedPending.map(siginfo), [{ signo: SIGRTMIN + 2, code: -1, value: 0x1234 }]);
      for (const [signo, [handler, flags, mask]] of before.sigacts) {
        const a = proc.sigactions.find((x) => x.signo === signo);
        assert.ok(a, `sigaction of ${signo}`);
        assert.equal(a.handler, Number(handler));
        assert.equal(BigInt(a.flags), BigInt(flags));
        assert.equal(BigInt(a.mask), BigInt(mask));
      }
      assert.equal(
        proc.sigactions.find((a) => a.signo === 15),
        undefined,
        'SIGTERM keeps SIG_DFL',
      );
      assert.equal(proc.sigactions.find((a) => a.signo === 10)!.handler, s.addr('h1'));
      assert.equal(proc.pdeathsig, 9);
      assert.equal(proc.comm, 'dump_threads');
      assert.equal(proc.exe.path, programPath('dump_threads'));
      const heap = proc.vmas.find((v) => v.kind === 'heap');
      assert.ok(heap && heap.end === Math.ceil(proc.mm.brk / PAGE) * PAGE, 'brk is the end of [heap]');
      const rw = fdOf(proc, s.num('fdrw'));
      assert.equal(rw.pos, 123);
      assert.match(posBefore, /^pos:\t123$/m);
      assert.equal(rw.kind, 'file');
      assert.equal(rw.flags & 3, constants.O_RDWR);
      const log = fdOf(proc, s.num('fdlog'));
      assert.equal(log.pos, 10);
      assert.ok((log.flags & constants.O_APPEND) !== 0, 'O_APPEND is kept');
      assert.equal(fdOf(proc, s.num('fdmap')).pos, 4096);
      assert.deepEqual(
        { kind: fdOf(proc, s.num('fddir')).kind, path: (fdOf(proc, s.num('fddir')) as { path: string }).path },
        { kind: 'directory', path: work },
      );
      assert.deepEqual((fdOf(proc, s.num('fdnull')) as { rdev: number[] }).rdev, [1, 3]);
      for (const fd of [0, 1, 2]) assert.equal(fdOf(proc, fd).kind, 'pipe');
      const stdio = meta<PipeRecord>(img, `pipe/${(fdOf(proc, 1) as { pipe: string }).pipe}`);
      assert.ok(stdio.externalPids?.includes(s.prog.pid), 'the relay holds the other end of stdout');

      // Memory: every stored page equals the process's memory; absent pages are not stored.
      const pages = await compareWithMemory(store, img, s.pid);
      const dense = s.addr('dense');
      for (let i = 0; i < 256; i++) assert.ok(pages.get(dense + i * PAGE)?.data, `dense page ${i} stored`);
      const sparse = s.addr('sparse');
      for (let i = 0; i < 64; i++) {
        const p = pages.get(sparse + i * PAGE);
        if (i % 2 === 0) assert.ok(p?.data, `sparse page ${i} has data`);
        else if (i === 1) assert.deepEqual(p, { present: true, data: null }, 'the read-only page is a zero page');
        else assert.equal(p, undefined, `untouched sparse page ${i} is not stored`);
      }
      const mapped = s.addr('mapped');
      for (let i = 0; i < 16; i++) {
        const p = pages.get(mapped + i * PAGE);
        if (i === 2 || i === 5) assert.ok(p?.data, `rewritten page ${i} of the file mapping is stored`);
        else assert.equal(p, undefined, `clean page ${i} of the file mapping comes from the file`);
      }

      // The program carries on with its state intact.
      assert.equal(await ask(s, 'check', 'CHECK'), 'CHECK OK');
      const after = await threadFacts(s);
      assert.deepEqual(after, before);
      assertRunning(s.pid);
    });
  } finally {
    s.prog.kill();
    rmSync(work, { recursive: true, force: true });
  }
});

/** Resolves once `pid` no longer exists (not a timing assertion: the test waits for an event). */
async function gone(pid: number): Promise<boolean> {
  for (let i = 0; i < 500; i++) {
    if (!existsSync(`/proc/${pid}`)) return true;
    await sleep(20);
  }
  return false;
}

test(
  'dump of a forked tree: one pipe with its unread data, one shared object, deduplicated pages',
  { skip },
  async () => {
    const s = await start('dump_tree', ['2']);
    try {
      await withStore(async (store) => {
        const children = s.f.get('children')!.split(',').map(Number);
        const r = await dump(store, s.pid, { leaveRunning: true });
        for (const pid of [s.pid, ...children]) assertRunning(pid);
        const img = await store.loadImage(r.name);
        const tree = meta<TreeRecord>(img, 'tree');
        assert.deepEqual(
          tree.processes.map((p) => [p.pid, p.ppid, p.tids, p.state]),
          [[s.pid, s.prog.pid, [s.pid], 'running'], ...children.map((c) => [c, s.pid, [c], 'running'])],
        );
        assert.ok(tree.processes.every((p) => p.sid === tree.processes[0]!.sid && p.pgid === tree.processes[0]!.pgid));

        // The pipe: every process holds both ends of the same pipe, whose data was read without consuming it.
        const procs = [s.pid, ...children].map((pid) => meta<ProcessRecord>(img, `process/${pid}`));
        const ends = procs.map((p) => [fdOf(p, s.num('piperd')), fdOf(p, s.num('pipewr'))] as const);
        const id = (ends[0]![0] as { pipe: string }).pipe;
        for (const [rd, wr] of ends) {
          assert.deepEqual([rd.kind, (rd as { end: string }).end, (rd as { pipe: string }).pipe], ['pipe', 'read', id]);
          assert.deepEqual(
            [wr.kind, (wr as { end: string }).end, (wr as { pipe: string }).pipe],
            ['pipe', 'write', id],
          );
        }
        const pipe = meta<PipeRecord>(img, `pipe/${id}`);
        assert.equal(Buffer.from(pipe.data, 'base64').toString(), 'unread-data-0123456789');
        assert.equal(pipe.externalPids, undefined, 'only the tree holds this pipe');
        assert.equal(pipe.size, 65536);
        const fd = openSync(`/proc/${s.pid}/fd/${s.num('piperd')}`, constants.O_RDONLY | constants.O_NONBLOCK);
        try {
          assert.equal(native.pipePeek(fd).data.toString(), 'unread-data-0123456789', 'the data is still in the pipe');
        } finally {
          closeSync(fd);
        }

        // Shared anonymous memory: one object for the three mappings, its filled pages stored once.
        const shared = s.addr('shared');
        const vmas = procs.map((p) => p.vmas.find((v) => v.start === shared));
        assert.ok(vmas.every((v) => v?.content === 'shmem' && v.shmem === vmas[0]!.shmem && v.shared));
        const shmemId = vmas[0]!.shmem!;
        assert.deepEqual(meta(img, `shmem/${shmemId}`), { id: shmemId, size: 32 * PAGE });
        const objectPages = await imagePages(store, r.id, `shmem:${shmemId}`);
        assert.deepEqual(
          [...objectPages.keys()],
          [...Array(20).keys()].map((i) => i * PAGE),
        );
        for (const [off, p] of objectPages) assert.ok(p.data!.equals(readMem(s.pid, shared + off, PAGE)));
        for (const v of vmas) assert.equal(v!.offset, 0);

        // Private memory of all three equals what they hold; forked children share the parent's pages.
        for (const pid of [s.pid, ...children]) await compareWithMemory(store, img, pid);
        assert.ok(
          r.bytesStored < r.bytes * 0.5,
          `stored ${r.bytesStored} of ${r.bytes}: children share the parent's pages`,
        );
        assert.equal(await ask(s, 'check', 'CHECK'), 'CHECK OK');
      });
    } finally {
      s.prog.kill();
    }
  },
);

test('two dumps of the same program share identical pages in the store', { skip }, async () => {
  const s = await start('dump_big', ['16']);
  try {
    await withStore(async (store) => {
      const first = await dump(store, s.pid, { name: 'big-1', leaveRunning: true });
      const second = await dump(store, s.pid, { name: 'big-2', leaveRunning: true });
      assert.ok(first.bytes >= 16 << 20);
      assert.ok(first.bytesStored >= 16 << 20, 'the first dump stores the 16 MiB');
      assert.ok(second.bytesStored < second.bytes * 0.05, `second dump added ${second.bytesStored} bytes`);
      const stats = await store.stats();
      assert.ok(stats.chunkBytes < first.bytes + second.bytes * 0.05);
      assert.deepEqual((await store.list()).map((i) => i.name).sort(), ['big-1', 'big-2']);
      assert.equal(await ask(s, 'check', 'CHECK'), 'CHECK OK');
    });
  } finally {
    s.prog.kill();
  }
});

test('dump without --leave-running kills the whole tree, which its parent reaps', { skip }, async () => {
  const s = await start('dump_tree', ['2', 'zombie']);
  try {
    await withStore(async (store) => {
      const children = s.f.get('children')!.split(',').map(Number);
      const zombie = s.num('zombie');
      const r = await dump(store, s.pid);
      assert.equal(r.leftRunning, false);
      const img = await store.loadImage(r.name);
      const z = meta<TreeRecord>(img, 'tree').processes.find((p) => p.pid === zombie);
      assert.deepEqual(z, { pid: zombie, ppid: s.pid, pgid: z!.pgid, sid: z!.sid, tids: [zombie], state: 'zombie' });
      assert.deepEqual(meta(img, `process/${zombie}`), {
        pid: zombie,
        comm: 'dump_tree',
        exitCode: 7 << 8,
        zombie: true,
      });
      for (const pid of [s.pid, ...children, zombie]) assert.ok(await gone(pid), `process ${pid} is gone`);
      assert.deepEqual(await s.prog.exit(), { code: null, signal: 'SIGKILL' }, 'the relay saw its child killed');
    });
  } finally {
    s.prog.kill();
  }
});

test('a stopped process is dumped as stopped and stays stopped', { skip }, async () => {
  const s = await start('dump_counter');
  try {
    await withStore(async (store) => {
      process.kill(s.pid, 'SIGSTOP');
      for (let i = 0; i < 500 && stateOf(s.pid) !== 'T'; i++) await sleep(10);
      assert.equal(stateOf(s.pid), 'T');
      const r = await dump(store, s.pid, { leaveRunning: true });
      const img = await store.loadImage(r.name);
      const entry = meta<TreeRecord>(img, 'tree').processes[0]!;
      assert.equal(entry.state, 'stopped');
      for (const tid of entry.tids) assert.equal(meta<ThreadRecord>(img, `thread/${tid}`).groupStopped, true);
      for (const tid of readdirSync(`/proc/${s.pid}/task`).map(Number)) assert.equal(stateOf(tid), 'T');
      process.kill(s.pid, 'SIGCONT');
      const a = Number((await ask(s, 'count', 'COUNT')).split(' ')[1]);
      await sleep(50);
      const b = Number((await ask(s, 'count', 'COUNT')).split(' ')[1]);
      assert.ok(b > a, 'it counts again after SIGCONT');
    });
  } finally {
    s.prog.kill();
  }
});

/** The counter's state, to show a refused dump left it alone. */
async function counterState(s: Started): Promise<{ count: number; sum: string }> {
  const count = Number((await ask(s, 'count', 'COUNT')).split(' ')[1]);
  const sum = (await ask(s, 'sum', 'SUM')).split(' ')[1]!;
  return { count, sum };
}

async function assertUnharmed(s: Started, before: { count: number; sum: string }): Promise<void> {
  assertRunning(s.pid);
  assert.equal(readFileSync(`/proc/${s.pid}/status`, 'utf8').match(/^TracerPid:\s+(\d+)$/m)![1], '0');
  for (let i = 0; i < 200; i++) {
    const now = await counterState(s);
    assert.equal(now.sum, before.sum, 'its memory is unchanged');
    if (now.count > before.count) return;
    await sleep(10);
  }
  assert.fail('it stopped counting');
}

async function refused(store: ImageStore, pid: number, code: string, message: RegExp): Promise<void> {
  await assert.rejects(dump(store, pid), (e: unknown) => {
    assert.ok(isLazyRestoreError(e), `a LazyRestoreError, not ${String(e)}`);
    assert.equal(e.code, code);
    assert.match(e.message, message);
    return true;
  });
  assert.deepEqual(await store.list(), [], 'no image is listed');
}

test(
  'refusals: no such process, kernel thread, ourselves, our ancestors and children, a thread id',
  { skip },
  async () => {
    await withStore(async (store) => {
      const pidMax = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
      let free = pidMax - 1;
      while (existsSync(`/proc/${free}`)) free--;
      await refused(store, free, 'NO_SUCH_PROCESS', new RegExp(`no such process: ${free}`));
      await refused(store, 2, 'KERNEL_THREAD', /process 2 \(kthreadd\) is a kernel thread/);
      await refused(store, process.pid, 'DUMP_SELF', /lazyrestore itself/);
      await refused(store, process.ppid, 'DUMP_SELF', /ancestor of lazyrestore/);
      await refused(store, 1, 'DUMP_SELF', /ancestor of lazyrestore/);
      const s = await start('dump_threads', [mkdtempSync(join(tmpdir(), 'lazyrestore-dump-work-'))]);
      try {
        await refused(store, s.num('spin'), 'INVALID_ARGUMENT', new RegExp(`is a thread of process ${s.pid}`));
        // The relay is our own child: libuv would take its ptrace stops (and Node's stdio are sockets anyway).
        await refused(store, s.prog.pid, 'UNSUPPORTED_TASK', /is a child of lazyrestore itself/);
      } finally {
        s.prog.kill();
      }
    });
  },
);

test(
  'a process with a socket is refused, naming the process and the fd, and keeps running unchanged',
  { skip },
  async () => {
    const s = await start('dump_counter', ['socket']);
    try {
      await withStore(async (store) => {
        const before = await counterState(s);
        const fd = s.num('sock');
        await refused(
          store,
          s.pid,
          'UNSUPPORTED_FD',
          new RegExp(`process ${s.pid}: fd ${fd} is a socket \\(socket:\\[\\d+\\]\\)`),
        );
        await assertUnharmed(s, before);
      });
    } finally {
      s.prog.kill();
    }
  },
);

test(
  'a sealed memfd mapping is refused as UNSUPPORTED_MAPPING, naming the mapping and its seals',
  { skip },
  async () => {
    const s = await start('dump_counter', ['memfd']);
    try {
      await withStore(async (store) => {
        const before = await counterState(s);
        const at = s.addr('memfd').toString(16);
        await refused(
          store,
          s.pid,
          'UNSUPPORTED_MAPPING',
          new RegExp(`process ${s.pid}: mapping 0x${at}-0x[0-9a-f]+ maps /memfd:dump-counter, a memfd with seals 0x6,`),
        );
        await assertUnharmed(s, before);
      });
    } finally {
      s.prog.kill();
    }
  },
);

test('System V shared memory in huge pages is refused as UNSUPPORTED_MAPPING, naming it', { skip }, async (t) => {
  const pool = new HugePages();
  pool.reserve(1);
  try {
    if (pool.skip) return t.skip(pool.skip);
    const s = await start('dump_counter', ['sysvhuge']);
    try {
      await withStore(async (store) => {
        const before = await counterState(s);
        const at = s.addr('memfd').toString(16);
        await refused(
          store,
          s.pid,
          'UNSUPPORTED_MAPPING',
          new RegExp(
            `process ${s.pid}: mapping 0x${at}-0x[0-9a-f]+ is System V shared memory with huge pages \\(/SYSV00000000, SHM_HUGETLB\\), which restore does not recreate`,
          ),
        );
        await assertUnharmed(s, before);
      });
    } finally {
      s.prog.kill();
    }
  } finally {
    pool.release();
  }
});

test('a process in another namespace is refused as UNSUPPORTED_NAMESPACE', { skip }, async (t) => {
  if (!existsSync('/usr/bin/unshare')) return t.skip('needs unshare(1) from util-linux');
  // unshare(1) execs the program in a new UTS namespace; its worker (the process dumped) is born there.
  const child = spawn('/usr/bin/unshare', ['--uts', programPath('dump_counter')], { stdio: 'pipe' });
  try {
    const lines = createInterface({ input: child.stdout });
    const [ready] = (await once(lines, 'line')) as [string];
    const pid = Number(/pid=(\d+)/.exec(ready)![1]);
    await withStore(async (store) => {
      await refused(
        store,
        pid,
        'UNSUPPORTED_NAMESPACE',
        new RegExp(`process ${pid} \\(dump_counter\\): its uts namespace`),
      );
      assertRunning(pid);
    });
  } finally {
    child.kill('SIGKILL');
  }
});

test('a failure after the tree is frozen releases it unchanged and leaves no image', { skip }, async () => {
  // The thread in sigsuspend with SIGTRAP blocked passes the preflight; the tracer refuses to inject into it
  // (the int3 it traps with would alter its signal state), after the freeze and after other threads were asked.
  const s = await start('dump_counter', ['trapsuspend']);
  try {
    await withStore(async (store) => {
      const before = await counterState(s);
      const maps = readFileSync(`/proc/${s.pid}/maps`, 'utf8');
      const sigBlk = readFileSync(`/proc/${s.pid}/status`, 'utf8').match(/^SigBlk:.*$/m)![0];
      await refused(store, s.pid, 'UNSUPPORTED_TASK', /SIGTRAP is blocked inside syscall/);
      await assertUnharmed(s, before);
      assert.equal(readFileSync(`/proc/${s.pid}/maps`, 'utf8'), maps, 'the scratch page is gone again');
      assert.equal(readFileSync(`/proc/${s.pid}/status`, 'utf8').match(/^SigBlk:.*$/m)![0], sigBlk);
      assert.deepEqual((await store.stats()).chunks, 0, 'nothing of the image is left in the store');
    });
  } finally {
    s.prog.kill();
  }
});
