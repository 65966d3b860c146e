/**
 * The /proc readers (daemon/proc/) against real processes: a C program with
 * known state (test/programs/proc_target.c), its forked children, a kernel
 * thread, the test runner itself, and processes that do not exist.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  anonPageToDump,
  AT,
  auxvValue,
  devMajorMinor,
  findVma,
  listFds,
  listThreads,
  PAGE_SIZE,
  PagemapFile,
  parseMaps,
  parseSmaps,
  parseStat,
  parseStatus,
  privatePageRuns,
  processChildren,
  processTree,
  ProcFormatError,
  readAuxv,
  readCmdline,
  readComm,
  readFd,
  readFds,
  readLimits,
  readLinks,
  readLoginuid,
  readMaps,
  readNamespaces,
  readOomScoreAdj,
  readPagemap,
  readPersonality,
  readSmaps,
  readStat,
  readStatus,
  readTimerslackNs,
  RLIM_INFINITY,
  RLIMITS,
  sameNamespacesAs,
  sigmask,
  threadChildren,
  type FdDescription,
  type Vma,
} from '../daemon/proc/index.js';
import { Program, programPath } from './support/programs.js';

const SIGHUP = 1;
const SIGUSR1 = 10;
const SIGUSR2 = 12;
const SIGPIPE = 13;
const P = PAGE_SIZE;

/** A pid that cannot exist: pids are always below kernel.pid_max. */
function impossiblePid(): number {
  return Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8').trim());
}

function assertEsrch(fn: () => unknown, what: string): void {
  assert.throws(
    fn,
    (e: unknown) => {
      assert.equal((e as { code?: string }).code, 'ESRCH', `${what}: ${String(e)}`);
      assert.equal((e as { errno?: number }).errno, -3);
      assert.match((e as Error).message, /no such (process|thread)/);
      return true;
    },
    what,
  );
}

/** Asks the program to reap its children and exit; SIGKILL if it does not. */
async function stop(prog: Program): Promise<void> {
  if (prog.child.exitCode !== null || prog.child.signalCode !== null) return;
  prog.send('exit');
  const t = setTimeout(() => prog.kill(), 10_000);
  await prog.exit();
  clearTimeout(t);
}

function parseReady(line: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of line.split(' ').slice(1)) {
    const eq = kv.indexOf('=');
    out[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return out;
}

function only<T>(items: T[], what: string): T {
  assert.equal(items.length, 1, `exactly one ${what}`);
  return items[0]!;
}

function vmaAt(vmas: Vma[], addr: number): Vma {
  const v = findVma(vmas, addr);
  assert.ok(v, `a VMA at 0x${addr.toString(16)}`);
  return v;
}

describe('proc readers on a process with known state', () => {
  let prog: Program;
  let dir: string;
  let r: Record<string, string>;
  let pid: number;
  const hex = (k: string): number => Number.parseInt(r[k]!, 16);
  const num = (k: string): number => Number(r[k]);
  const fdOf = (fds: FdDescription[], key: string): FdDescription => {
    const fd = fds.find((f) => f.fd === num(key));
    assert.ok(fd, `fd ${key}=${r[key]} is listed`);
    return fd;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lr-proc-'));
    prog = new Program('proc_target', [dir]);
    r = parseReady(await prog.waitFor('READY'));
    pid = prog.pid;
    assert.equal(num('pid'), pid);
  });

  after(async () => {
    if (prog) await stop(prog);
    rmSync(dir, { recursive: true, force: true });
  });

  test('stat: comm with ") " ends at the last parenthesis; fields match the program', () => {
    const st = readStat(pid);
    assert.equal(st.pid, pid);
    assert.equal(st.comm, 'a) b');
    assert.equal(st.ppid, process.pid);
    assert.equal(st.numThreads, 3);
    assert.equal(st.kernelThread, false);
    assert.equal(st.exitSignal, 17); // SIGCHLD
    assert.ok(st.startCode > 0 && st.startCode < st.endCode);
    assert.ok(st.startBrk > 0 && st.startBrk <= hex('heap'));
    assert.ok(st.argStart < st.argEnd && st.envStart < st.envEnd);
    assert.ok(st.startData <= st.endData);
    const exe = readMaps(pid).filter((v) => v.path === programPath('proc_target'));
    assert.ok(
      exe.some((v) => v.exec && v.start <= st.startCode && st.endCode <= v.end),
      'code lies in the exe mapping',
    );
    assert.equal(readStat(pid, num('tid1')).comm, 'lr worker 0');
    assert.equal(readStat(pid, num('tid2')).pid, num('tid2'));
  });

  test('status: umask, ids, signal masks per thread, namespaces', () => {
    const s = readStatus(pid);
    assert.equal(s.name, 'a) b');
    assert.equal(s.umask, 0o027);
    assert.equal(s.tgid, pid);
    assert.equal(s.pid, pid);
    assert.equal(s.ppid, process.pid);
    assert.equal(s.tracerPid, 0);
    assert.equal(s.threads, 3);
    assert.deepEqual(s.nsPid, [pid]);
    assert.deepEqual(s.nsTgid, [pid]);
    assert.equal(s.kthread === null || s.kthread === false, true);
    const uid = process.getuid!();
    assert.deepEqual(s.uid, { real: uid, effective: uid, saved: uid, fs: uid });
    assert.equal(s.sigBlk, sigmask(SIGUSR1, SIGUSR2));
    assert.equal(s.sigBlk, BigInt(`0x${r.sigblk}`));
    assert.equal(s.sigIgn, BigInt(`0x${r.sigign}`));
    assert.ok(s.sigIgn & sigmask(SIGPIPE));
    assert.ok(s.sigCgt & sigmask(SIGUSR2));
    // glibc keeps signals 32 and 33 for itself and hides them from sigaction().
    assert.equal(s.sigCgt & ~sigmask(32, 33), BigInt(`0x${r.sigcgt}`));
    assert.equal(s.sigPnd, 0n);
    assert.equal(s.noNewPrivs, false);
    assert.equal(s.seccomp, 0);
    assert.equal(s.capEff, readStatus(process.pid).capEff);
    assert.ok(s.speculationStoreBypass.length > 0);

    assert.equal(readStatus(pid, num('tid1')).sigBlk, sigmask(SIGHUP, SIGUSR1, SIGUSR2));
    assert.equal(readStatus(pid, num('tid2')).sigBlk, sigmask(SIGUSR1, SIGUSR2));
    assert.equal(readStatus(pid, num('tid2')).pid, num('tid2'));
    assert.equal(readStatus(pid, num('tid2')).tgid, pid);
  });

  test('maps: every kind of VMA the program created, at its address', () => {
    const vmas = readMaps(pid);
    const anon = vmaAt(vmas, hex('anon'));
    assert.equal(anon.start, hex('anon'));
    assert.equal(anon.end, hex('anon') + num('anon_pages') * P);
    assert.deepEqual([anon.kind, anon.read, anon.write, anon.exec, anon.shared], ['anon', true, true, false, false]);
    assert.deepEqual([anon.path, anon.inode, anon.major, anon.minor], ['', 0, 0, 0]);
    const guard = vmaAt(vmas, hex('anon') - P);
    assert.deepEqual([guard.read, guard.write, guard.exec], [false, false, false]);

    assert.equal(vmaAt(vmas, hex('heap')).kind, 'heap');

    const shared = vmaAt(vmas, hex('shared'));
    assert.equal(shared.start, hex('shared'));
    assert.equal(shared.end - shared.start, 4 * P);
    assert.deepEqual([shared.kind, shared.shared, shared.path, shared.deleted], ['shmem', true, '/dev/zero', true]);

    const memfd = vmaAt(vmas, hex('memfd_map'));
    assert.equal(memfd.end - memfd.start, 2 * P);
    assert.deepEqual(
      [memfd.kind, memfd.shared, memfd.path, memfd.deleted],
      ['memfd', true, '/memfd:lr proc memfd', true],
    );

    const file = vmaAt(vmas, hex('filemap'));
    const st = statSync(r.mapped_path!);
    assert.equal(file.start, hex('filemap'));
    assert.equal(file.end - file.start, num('file_pages') * P);
    assert.deepEqual(
      [file.kind, file.shared, file.path, file.deleted, file.offset],
      ['file', false, r.mapped_path, false, 0],
    );
    assert.equal(file.inode, st.ino);
    assert.deepEqual({ major: file.major, minor: file.minor }, devMajorMinor(st.dev));

    assert.equal(
      only(
        vmas.filter((v) => v.kind === 'stack'),
        '[stack]',
      ).path,
      '[stack]',
    );
    const vdso = only(
      vmas.filter((v) => v.kind === 'vdso'),
      '[vdso]',
    );
    assert.equal(vdso.exec, true);
    assert.equal(
      only(
        vmas.filter((v) => v.kind === 'vsyscall'),
        '[vsyscall]',
      ).start,
      0xffffffffff600000,
    );
    assert.ok(vmas.some((v) => v.kind === 'vvar'));
    for (let i = 1; i < vmas.length; i++) assert.ok(vmas[i - 1]!.end <= vmas[i]!.start, 'sorted, disjoint');
  });

  test('smaps: sizes and VmFlags of the same VMAs', () => {
    const smaps = readSmaps(pid);
    const maps = readMaps(pid);
    assert.deepEqual(
      smaps.map((v) => [v.start, v.end, v.path, v.kind]),
      maps.map((v) => [v.start, v.end, v.path, v.kind]),
    );
    const anon = vmaAt(smaps, hex('anon')) as (typeof smaps)[number];
    assert.equal(anon.sizes.Size, num('anon_pages') * P);
    assert.equal(anon.sizes.Rss, 4 * P);
    assert.equal(anon.sizes.Anonymous, 4 * P);
    assert.equal(anon.sizes.Swap, 0);
    for (const f of ['rd', 'wr', 'mr', 'mw', 'me', 'nh', 'ac'] as const)
      assert.ok(anon.vmFlags.has(f), `anon has ${f}`);
    assert.ok(!anon.vmFlags.has('sh') && !anon.vmFlags.has('ex'));
    const shared = vmaAt(smaps, hex('shared')) as (typeof smaps)[number];
    assert.ok(shared.vmFlags.has('sh') && shared.vmFlags.has('ms'));
    assert.equal(shared.sizes.Rss, P);
    const file = vmaAt(smaps, hex('filemap')) as (typeof smaps)[number];
    assert.equal(file.sizes.Anonymous, P, 'one copied-on-write page');
    const stack = only(
      smaps.filter((v) => v.kind === 'stack'),
      '[stack]',
    );
    assert.ok(stack.vmFlags.has('gd'));
  });

  test('pagemap: present, exclusive and file bits match what the program touched', () => {
    const anonStart = hex('anon');
    const range = readPagemap(pid, anonStart, anonStart + num('anon_pages') * P);
    const present: number[] = [];
    const exclusive: number[] = [];
    for (let i = 0; i < range.pages; i++) {
      if (range.present(i)) present.push(i);
      if (range.exclusive(i)) exclusive.push(i);
      assert.equal(range.fileOrSharedAnon(i), false);
      assert.equal(range.swapped(i), false);
    }
    assert.deepEqual(present, r.touched!.split(',').map(Number));
    assert.deepEqual(exclusive, r.exclusive!.split(',').map(Number));
    assert.equal(range.entry(3).present, true);
    assert.equal(range.entry(1).present, false);
    assert.equal(range.entry(1).pfn, null);
    assert.equal(range.count(anonPageToDump), 4);

    const vmas = readMaps(pid);
    const pm = new PagemapFile(pid);
    try {
      assert.deepEqual(privatePageRuns(pm, vmaAt(vmas, anonStart)), [
        { start: anonStart, pages: 1 },
        { start: anonStart + 3 * P, pages: 1 },
        { start: anonStart + 5 * P, pages: 1 },
        { start: anonStart + 15 * P, pages: 1 },
      ]);
      // The private file mapping: every page is mapped, only page 2 was copied on write.
      const file = vmaAt(vmas, hex('filemap'));
      const fr = pm.read(file.start, file.end);
      assert.deepEqual(
        [0, 1, 2, 3].map((i) => fr.present(i)),
        [true, true, true, true],
      );
      assert.deepEqual(
        [0, 1, 2, 3].map((i) => fr.fileOrSharedAnon(i)),
        [true, true, false, true],
      );
      assert.deepEqual(privatePageRuns(pm, file), [{ start: file.start + num('cow') * P, pages: 1 }]);
      // Shared anonymous memory: page 1 is present and flagged file/shared-anon.
      const sr = pm.read(hex('shared'), hex('shared') + 4 * P);
      assert.deepEqual(
        [0, 1, 2, 3].map((i) => sr.present(i)),
        [false, true, false, false],
      );
      assert.equal(sr.fileOrSharedAnon(1), true);
      assert.throws(() => privatePageRuns(pm, vmaAt(vmas, hex('shared'))), /shared mapping/);
      const vsyscall = only(
        vmas.filter((v) => v.kind === 'vsyscall'),
        '[vsyscall]',
      );
      assert.throws(() => pm.read(vsyscall.start, vsyscall.end), /beyond the task size/);
      assert.throws(() => privatePageRuns(pm, vsyscall), /unsupported VMA kind 'vsyscall'/);
    } finally {
      pm.close();
    }
  });

  test('fds: kinds, offsets, flags and type-specific fdinfo', () => {
    const fds = readFds(pid);
    assert.deepEqual(
      fds.map((f) => f.fd),
      listFds(pid),
    );

    const append = fdOf(fds, 'fd_append');
    assert.equal(append.kind, 'file');
    assert.deepEqual(append.kind === 'file' && [append.path, append.deleted], [join(dir, 'append.log'), false]);
    assert.equal(append.info.pos, 123);
    assert.deepEqual([append.append, append.accessMode, append.cloexec], [true, 'w', false]);
    assert.equal(append.stat.size, 123);

    const deleted = fdOf(fds, 'fd_deleted');
    assert.deepEqual(deleted.kind === 'file' && [deleted.path, deleted.deleted], [join(dir, 'deleted.bin'), true]);
    assert.equal(deleted.stat.nlink, 0);

    const fifo = fdOf(fds, 'fd_fifo');
    assert.deepEqual(fifo.kind === 'fifo' && [fifo.path, fifo.accessMode], [join(dir, 'fifo'), 'rw']);
    const d = fdOf(fds, 'fd_dir');
    assert.deepEqual(d.kind === 'directory' && d.path, dir);

    const pr = fdOf(fds, 'fd_pipe_r');
    const pw = fdOf(fds, 'fd_pipe_w');
    assert.equal(pr.kind, 'pipe');
    assert.equal(pw.kind, 'pipe');
    assert.equal(pr.kind === 'pipe' && pw.kind === 'pipe' && pr.inode === pw.inode, true);
    assert.deepEqual([pr.accessMode, pw.accessMode], ['r', 'w']);

    const dn = fdOf(fds, 'fd_null');
    assert.deepEqual(dn.kind === 'chardev' && [dn.path, dn.major, dn.minor, dn.accessMode], ['/dev/null', 1, 3, 'rw']);

    const s0 = fdOf(fds, 'fd_sock0');
    const s1 = fdOf(fds, 'fd_sock1');
    assert.equal(s0.kind === 'socket' && s1.kind === 'socket' && s0.inode !== s1.inode, true);

    const anonKind = (key: string): string | undefined => {
      const f = fdOf(fds, key);
      return f.kind === 'anon_inode' ? f.anonKind : undefined;
    };
    assert.equal(anonKind('fd_eventfd'), 'eventfd');
    assert.equal(anonKind('fd_epoll'), 'eventpoll');
    assert.equal(anonKind('fd_signalfd'), 'signalfd');
    assert.equal(anonKind('fd_timerfd'), 'timerfd');
    assert.equal(anonKind('fd_inotify'), 'inotify');
    assert.equal(anonKind('fd_pidfd'), 'pidfd');
    assert.ok(fdOf(fds, 'fd_pidfd').info.extra.includes(`Pid:\t${r.child}`));
    if (num('fd_uffd') >= 0) assert.equal(anonKind('fd_uffd'), 'userfaultfd');
    const efd = fdOf(fds, 'fd_eventfd');
    assert.equal(efd.cloexec, true);
    assert.ok(
      efd.info.extra.some((l) => /^eventfd-count:\s+5$/.test(l)),
      efd.info.extra.join('|'),
    );
    const ep = fdOf(fds, 'fd_epoll');
    assert.ok(
      ep.info.extra.some((l) => new RegExp(`^tfd:\\s+${num('fd_eventfd')}\\s`).test(l)),
      ep.info.extra.join('|'),
    );
    const sfd = fdOf(fds, 'fd_signalfd');
    assert.ok(sfd.info.extra.includes(`sigmask:\t${sigmask(SIGUSR1).toString(16).padStart(16, '0')}`));
    assert.ok(fdOf(fds, 'fd_inotify').info.extra.some((l) => l.startsWith('inotify wd:1 ')));

    const memfd = fdOf(fds, 'fd_memfd');
    assert.deepEqual(memfd.kind === 'memfd' && memfd.name, 'lr proc memfd');
    assert.equal(memfd.stat.size, 2 * P);

    assert.deepEqual(readFd(pid, num('fd_append')).info.pos, 123);
    assert.throws(
      () => readFd(pid, 999),
      (e: unknown) => (e as { code?: string }).code === 'ENOENT',
    );
  });

  test('misc: comm, limits, auxv, links, cmdline, namespaces, numbers', () => {
    assert.equal(readComm(pid), 'a) b');
    assert.equal(readComm(pid, num('tid1')), 'lr worker 0');
    assert.equal(readComm(pid, num('tid2')), 'lr worker 1');

    const limits = readLimits(pid);
    assert.deepEqual(
      Object.keys(limits),
      RLIMITS.map(([name]) => name),
    );
    assert.equal(limits.RLIMIT_NOFILE.soft, 777n);
    assert.equal(limits.RLIMIT_NOFILE.hard, BigInt(r.nofile_hard!));
    assert.equal(limits.RLIMIT_NOFILE.resource, 7);
    // Other limits are inherited from the test runner.
    assert.deepEqual(limits.RLIMIT_STACK, readLimits(process.pid).RLIMIT_STACK);
    assert.ok(Object.values(limits).every((l) => l.soft <= l.hard || l.hard === RLIM_INFINITY));

    const auxv = readAuxv(pid);
    assert.equal(auxv.raw.length, (auxv.entries.length + 1) * 16);
    assert.equal(auxvValue(auxv, AT.AT_PAGESZ), 4096n);
    const vmas = readMaps(pid);
    const vdso = only(
      vmas.filter((v) => v.kind === 'vdso'),
      '[vdso]',
    );
    assert.equal(auxvValue(auxv, AT.AT_SYSINFO_EHDR), BigInt(vdso.start));
    const entry = Number(auxvValue(auxv, AT.AT_ENTRY));
    assert.equal(vmaAt(vmas, entry).path, programPath('proc_target'));

    const links = readLinks(pid);
    assert.equal(links.exe, programPath('proc_target'));
    assert.equal(links.cwd, process.cwd());
    assert.equal(links.root, '/');
    assert.deepEqual(readCmdline(pid).args, [programPath('proc_target'), dir]);
    assert.equal(readPersonality(pid), readPersonality(process.pid));
    assert.equal(readOomScoreAdj(pid), readOomScoreAdj(process.pid));
    assert.equal(readTimerslackNs(pid), readTimerslackNs(process.pid));
    assert.equal(readLoginuid(pid), readLoginuid(process.pid));

    const ns = readNamespaces(pid);
    for (const name of ['mnt', 'net', 'pid', 'user', 'uts', 'ipc']) assert.ok(ns[name]! > 0, `${name} namespace`);
    assert.deepEqual(sameNamespacesAs(pid, 'self'), []);
  });

  test('tasks: threads, children and the tree, including a zombie', async () => {
    const tids = [num('tid1'), num('tid2')].sort((a, b) => a - b);
    assert.deepEqual(listThreads(pid), [pid, ...tids]);
    assert.deepEqual(processChildren(pid), [num('child')]);
    assert.deepEqual(threadChildren(pid, num('tid1')), []);

    prog.send('zombie');
    const zombie = Number(parseReady(await prog.waitFor('ZOMBIE')).pid);
    assert.equal(readStat(zombie).state, 'Z');
    assert.equal(readStatus(zombie).state, 'Z');
    assertEsrch(() => readMaps(zombie), 'maps of a zombie');
    assertEsrch(() => readFds(zombie), 'fds of a zombie');

    const children = [num('child'), zombie].sort((a, b) => a - b);
    assert.deepEqual(threadChildren(pid, pid), children);
    assert.deepEqual(processTree(pid), [
      { pid, ppid: process.pid, threads: [pid, ...tids], children },
      ...children.map((c) => ({ pid: c, ppid: pid, threads: [c], children: [] })),
    ]);
  });
});

test('a kernel thread (kthreadd, pid 2) is recognised and has no memory', () => {
  const st = readStat(2);
  assert.equal(st.comm, 'kthreadd');
  assert.equal(st.kernelThread, true);
  assert.equal(st.ppid, 0);
  const status = readStatus(2);
  assert.ok(status.kthread === null || status.kthread === true);
  assert.deepEqual(readMaps(2), []);
  assert.equal(readLinks(2).exe, null);
  assert.deepEqual(readAuxv(2).entries, []);
  assert.equal(readStat(1).kernelThread, false);
});

test('a pid that does not exist, or a process that has exited, gives ESRCH', async () => {
  const none = impossiblePid();
  assertEsrch(() => readStat(none), 'stat');
  assertEsrch(() => readStatus(none), 'status');
  assertEsrch(() => readMaps(none), 'maps');
  assertEsrch(() => readSmaps(none), 'smaps');
  assertEsrch(() => new PagemapFile(none), 'pagemap');
  assertEsrch(() => readFds(none), 'fds');
  assertEsrch(() => listThreads(none), 'threads');
  assertEsrch(() => processTree(none), 'tree');
  assertEsrch(() => readLimits(none), 'limits');
  assertEsrch(() => readAuxv(none), 'auxv');
  assertEsrch(() => readLinks(none), 'links');
  assertEsrch(() => readNamespaces(none), 'ns');
  assertEsrch(() => readStatus(process.pid, none), 'a thread that does not exist');

  const dir = mkdtempSync(join(tmpdir(), 'lr-proc-'));
  const prog = new Program('proc_target', [dir]);
  try {
    await prog.waitFor('READY');
    const pid = prog.pid;
    const pm = new PagemapFile(pid);
    try {
      await stop(prog); // reaped by Node: the pid is gone
      assertEsrch(() => readStat(pid), 'stat of an exited process');
      assertEsrch(() => readMaps(pid), 'maps of an exited process');
      // An fd opened before the exit: reads now fail, and are reported as ESRCH.
      assertEsrch(() => pm.read(0x400000, 0x401000), 'pagemap read after the exit');
    } finally {
      pm.close();
    }
  } finally {
    prog.kill();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('namespaces that differ are listed', async (t) => {
  if (process.getuid!() !== 0) return t.skip('unshare(1) of uts/ipc namespaces needs root');
  if (spawnSync('unshare', ['--version']).error) return t.skip('unshare(1) is not installed');
  const child = spawn('unshare', ['--uts', '--ipc', 'sleep', '60'], { stdio: 'ignore' });
  const exited = once(child, 'exit');
  try {
    const pid = child.pid!;
    // unshare(1) enters the new namespaces and then execs sleep: wait for the exec.
    while (readComm(pid) !== 'sleep') await new Promise((res) => setTimeout(res, 10));
    assert.deepEqual(sameNamespacesAs(pid, 'self'), ['ipc', 'uts']);
    assert.deepEqual(sameNamespacesAs(pid, pid), []);
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
});

test("the test runner's own /proc files parse without error", () => {
  const self = process.pid;
  const vmas = readMaps(self);
  assert.ok(vmas.some((v) => v.kind === 'stack'));
  assert.ok(vmas.some((v) => v.kind === 'file' && v.exec));
  const smaps = readSmaps(self);
  assert.ok(smaps.length > 10);
  const pm = new PagemapFile(self);
  let stored = 0;
  try {
    for (const v of vmas) {
      if (v.shared || !(v.kind === 'anon' || v.kind === 'heap' || v.kind === 'stack' || v.kind === 'file')) continue;
      for (const run of privatePageRuns(pm, v)) stored += run.pages;
    }
  } finally {
    pm.close();
  }
  assert.ok(stored > 0, 'a running Node has private pages to dump');
  const st = readStat(self);
  assert.equal(st.pid, self);
  assert.equal(st.kernelThread, false);
  const status = readStatus(self);
  assert.equal(status.pid, self);
  const threads = listThreads(self);
  assert.equal(threads[0], self);
  for (const tid of threads) {
    try {
      assert.equal(readStatus(self, tid).tgid, self);
      assert.equal(readStat(self, tid).pid, tid);
    } catch (e) {
      // A libuv/V8 worker thread may exit while we walk: only that is allowed.
      assert.equal((e as { code?: string }).code, 'ESRCH');
    }
  }
  const fds = readFds(self, { skipClosed: true });
  assert.ok(fds.length >= 3);
  assert.ok(
    fds.some((f) => f.kind === 'anon_inode' && f.anonKind === 'eventpoll'),
    'libuv has an epoll fd',
  );
  assert.ok(readAuxv(self).entries.length > 10);
  assert.equal(readLinks(self).exe, process.execPath);
  assert.ok(readCmdline(self).args!.length >= 2);
  assert.equal(Object.keys(readLimits(self)).length, 16);
  assert.ok(Object.keys(readNamespaces(self)).includes('mnt'));
  assert.equal(readComm(self), st.comm);
  assert.deepEqual(processTree(self)[0]!.pid, self);
});

test('malformed text is an error naming the file and line', () => {
  const fmt = (fn: () => unknown, line: number, re: RegExp): void => {
    assert.throws(fn, (e: unknown) => {
      assert.ok(e instanceof ProcFormatError, String(e));
      assert.equal(e.code, 'EPROCFORMAT');
      assert.equal(e.file, 'sample');
      assert.equal(e.line, line);
      assert.match(e.message, re);
      return true;
    });
  };
  const status = readFileSync(`/proc/${process.pid}/status`, 'utf8');
  fmt(() => parseStatus(`${status}Brand_New_Field:\t1\n`, 'sample'), status.split('\n').length, /unknown status field/);
  fmt(() => parseStatus(status.replace(/^SigBlk:.*\n/m, ''), 'sample'), 0, /no SigBlk line/);
  const maps = '00400000-00401000 r-xp 00000000 08:01 12 /bin/x\n00401000-00402000 r--q 00000000 00:00 0\n';
  fmt(() => parseMaps(maps, 'sample'), 2, /perms are not/);
  // The first VMA of our own smaps, through its VmFlags line.
  const smapsLines = readFileSync(`/proc/${process.pid}/smaps`, 'utf8').split('\n');
  const smaps = smapsLines.slice(0, smapsLines.findIndex((l) => l.startsWith('VmFlags:')) + 1).join('\n') + '\n';
  assert.equal(parseSmaps(smaps, 'sample').length, 1);
  const vmflags = smaps.split('\n').findIndex((l) => l.startsWith('VmFlags:')) + 1;
  fmt(
    () => parseSmaps(smaps.replace(/^VmFlags: /m, 'VmFlags: zz '), 'sample'),
    vmflags,
    /unknown VmFlags mnemonic "zz"/,
  );
  fmt(() => parseSmaps(smaps.replace(/^VmFlags: /m, 'VmFlags: ?? '), 'sample'), vmflags, /no mnemonic/);
  const stat = readFileSync(`/proc/${process.pid}/stat`, 'utf8');
  fmt(() => parseStat(stat.trimEnd() + ' 0\n', 'sample'), 1, /53 fields, expected 52/);
  assert.equal(parseStat(stat, 'sample').pid, process.pid);
});
