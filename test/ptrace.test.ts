/**
 * The tracer thread on real processes: test/programs/ptrace_target.c (main
 * thread reading commands, a thread spinning with known ymm/r12 values, a
 * thread blocked in read(2)) is seized, stopped, inspected, modified,
 * injected into and released, and then reports whether its state survived.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { runInNewContext } from 'node:vm';
import { Worker } from 'node:worker_threads';
import { once } from 'node:events';
import { setFlagsFromString } from 'node:v8';
import { isSystemError, native, USER_REGS_SIZE } from '../native/index.js';
import { PTRACE_EVENT, Tracer } from '../daemon/tracer.js';
import { SYS } from '../daemon/regs.js';
import { Program } from './support/programs.js';

const SIGTRAP = 5;
const SIGUSR1 = 10;
const PAUSE_NR = 34; // pause(2): blocks until a signal arrives
const PROT_RW = 0x3;
const PROT_RWX = 0x7;
const MAP_PRIVATE_ANON = 0x22;

function ptraceUnavailable(): string | null {
  try {
    if (readFileSync('/proc/sys/kernel/yama/ptrace_scope', 'utf8').trim() === '3')
      return 'ptrace is disabled (yama ptrace_scope=3)';
  } catch {
    // no Yama: ptrace is governed by the usual credential checks
  }
  if (process.getuid?.() !== 0) return 'attaching to tasks needs root (or CAP_SYS_PTRACE)';
  return null;
}
const skipReason = ptraceUnavailable();

interface Target {
  prog: Program;
  pid: number;
  main: number;
  spin: number;
  block: number;
  tids: number[];
  avx: boolean;
  buf: number;
  ro: number;
  spinStack: number;
}

async function startTarget(): Promise<Target> {
  const prog = new Program('ptrace_target');
  const fields = new Map<string, string>();
  for (const kv of (await prog.waitFor('READY')).split(' ').slice(1)) {
    const [k, v] = kv.split('=');
    fields.set(k!, v!);
  }
  const num = (k: string) => Number(fields.get(k));
  const addr = (k: string) => Number.parseInt(fields.get(k)!, 16);
  const t = { prog, pid: num('pid'), main: num('main'), spin: num('spin'), block: num('block') };
  return {
    ...t,
    tids: [t.main, t.spin, t.block],
    avx: fields.get('avx') === '1',
    buf: addr('buf'),
    ro: addr('ro'),
    spinStack: addr('spinstack'),
  };
}

/** Runs `fn` with a fresh target and tracer; kills and closes both afterwards. */
async function withTarget(fn: (t: Target, tracer: Tracer) => Promise<void>): Promise<void> {
  const t = await startTarget();
  const tracer = Tracer.open();
  try {
    await fn(t, tracer);
  } finally {
    t.prog.kill();
    await tracer.close();
  }
}

async function stopAll(t: Target, tracer: Tracer): Promise<void> {
  for (const tid of t.tids) await tracer.seizeAndInterrupt(tid);
}

async function detachAll(t: Target, tracer: Tracer): Promise<void> {
  for (const tid of t.tids) await tracer.detach(tid, 0);
}

interface Mapping {
  start: number;
  end: number;
  perms: string;
  path: string;
}

function readMaps(pid: number): Mapping[] {
  return readFileSync(`/proc/${pid}/maps`, 'utf8')
    .trim()
    .split('\n')
    .map((line) => {
      const [range, perms, , , , ...rest] = line.split(/\s+/);
      const [start, end] = range!.split('-').map((h) => Number.parseInt(h, 16));
      return { start: start!, end: end!, perms: perms!, path: rest.join(' ') };
    });
}

function mappingOf(pid: number, addr: bigint | number): Mapping | undefined {
  const a = Number(addr);
  return readMaps(pid).find((m) => a >= m.start && a < m.end);
}

function tracerPidOf(pid: number): number {
  const m = /^TracerPid:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]);
}

/** The 32 bytes the spin thread keeps in ymm8 (which = 0) or ymm9 (which = 1). */
function pattern(which: 0 | 1): Buffer {
  return Buffer.from(Array.from({ length: 32 }, (_, i) => (which === 0 ? 0xa0 : 0x40) + i));
}

// Offsets in the standard-format XSAVE area (Intel SDM vol. 1, 13.4): the
// legacy region keeps xmm0..15 from byte 160; the AVX component (ymm upper
// halves) starts at byte 576.
const XMM_OFFSET = 160;
const YMM_HI_OFFSET = 576;

function assertSystemError(e: unknown, code: string, syscall: string, messageIncludes?: string): true {
  assert.ok(isSystemError(e), `expected a SystemError, got ${String(e)}`);
  assert.equal(e.code, code);
  assert.equal(e.syscall, syscall);
  assert.ok(e.errno < 0);
  if (messageIncludes) assert.ok(e.message.includes(messageIncludes), `"${e.message}" lacks "${messageIncludes}"`);
  return true;
}

test('PTRACE_INTERRUPT reports a PTRACE_EVENT_STOP with SIGTRAP', { skip: skipReason ?? false }, async () => {
  await withTarget(async (t, tracer) => {
    await tracer.seize(t.spin);
    await tracer.interrupt(t.spin);
    assert.deepEqual(await tracer.wait(t.spin, 10_000), { kind: 'stopped', signal: SIGTRAP, event: PTRACE_EVENT.STOP });
  });
});

test(
  'every thread stops with rip in text, rsp in its stack and its own registers',
  { skip: skipReason ?? false },
  async () => {
    await withTarget(async (t, tracer) => {
      await stopAll(t, tracer);
      const fsBases = new Set<bigint>();
      for (const tid of t.tids) {
        const regs = await tracer.getRegs(tid);
        assert.equal(regs.buffer.length, USER_REGS_SIZE);
        assert.ok(
          mappingOf(t.pid, regs.rip)?.perms.includes('x'),
          `tid ${tid}: rip ${regs.rip.toString(16)} not in text`,
        );
        fsBases.add(regs.fs_base);
        assert.equal((await tracer.getSigmask(tid)) & (1n << BigInt(SIGUSR1 - 1)), 0n, 'SIGUSR1 is not blocked');
      }
      assert.equal(fsBases.size, 3, 'each thread has its own TLS (fs_base)');
      assert.equal(mappingOf(t.pid, (await tracer.getRegs(t.main)).rsp)?.path, '[stack]');

      const spin = await tracer.getRegs(t.spin);
      assert.match(mappingOf(t.pid, spin.rip)!.path, /ptrace_target$/, 'the spin loop runs in the program text');
      assert.equal(
        mappingOf(t.pid, spin.rsp)?.start,
        mappingOf(t.pid, t.spinStack)?.start,
        'spin rsp is on its thread stack',
      );
      assert.equal(spin.r12, 0x5eedn, 'r12 holds the value the spin loop loaded');
      // The blocked threads were interrupted inside read(2): orig_rax = 0 and a restart code in rax.
      const block = await tracer.getRegs(t.block);
      assert.equal(block.orig_rax, 0n);
      assert.equal(block.signed('rax'), -512n, 'rax = -ERESTARTSYS');
    });
  },
);

test(
  'xstate holds the spinning ymm values and survives a get/set round trip and detach',
  { skip: skipReason ?? false },
  async () => {
    await withTarget(async (t, tracer) => {
      await stopAll(t, tracer);
      const xs = await tracer.getXstate(t.spin);
      assert.ok(xs.length >= 512 + 64, `XSAVE area of ${xs.length} bytes`);
      for (const reg of [0, 1] as const) {
        const xmm = XMM_OFFSET + (8 + reg) * 16;
        assert.deepEqual(xs.subarray(xmm, xmm + 16), pattern(reg).subarray(0, 16), `xmm${8 + reg}`);
        if (t.avx) {
          const hi = YMM_HI_OFFSET + (8 + reg) * 16;
          assert.deepEqual(xs.subarray(hi, hi + 16), pattern(reg).subarray(16, 32), `ymm${8 + reg} upper half`);
        }
      }
      await tracer.setXstate(t.spin, xs);
      await assert.rejects(tracer.setXstate(t.spin, xs.subarray(0, 512)), (e) =>
        assertSystemError(e, 'EINVAL', 'ptrace', 'NT_X86_XSTATE'),
      );
      await detachAll(t, tracer);
      t.prog.send('check');
      assert.match(await t.prog.waitFor('FPU'), /^FPU OK \d+$/);
    });
  },
);

test('setXstate changes the vector registers the program then observes', { skip: skipReason ?? false }, async () => {
  await withTarget(async (t, tracer) => {
    await stopAll(t, tracer);
    const xs = await tracer.getXstate(t.spin);
    const fresh = Buffer.from(Array.from({ length: 32 }, (_, i) => 0x01 + i));
    fresh.copy(xs, XMM_OFFSET + 8 * 16, 0, 16);
    if (t.avx) fresh.copy(xs, YMM_HI_OFFSET + 8 * 16, 16, 32);
    await tracer.setXstate(t.spin, xs);
    await detachAll(t, tracer);
    t.prog.send('check');
    const width = t.avx ? 32 : 16;
    const expected = `FPU FAIL ${fresh.subarray(0, width).toString('hex')} ${pattern(1).subarray(0, width).toString('hex')}`;
    assert.equal(await t.prog.waitFor('FPU'), expected);
  });
});

test('setRegs changes r12 of the spinning thread', { skip: skipReason ?? false }, async () => {
  await withTarget(async (t, tracer) => {
    await stopAll(t, tracer);
    const regs = await tracer.getRegs(t.spin);
    regs.r12 = 0xfeedf00dn;
    await tracer.setRegs(t.spin, regs);
    assert.equal((await tracer.getRegs(t.spin)).r12, 0xfeedf00dn);
    await assert.rejects(tracer.setRegs(t.spin, Buffer.alloc(100)), RangeError);
    await detachAll(t, tracer);
    t.prog.send('r12');
    assert.equal(await t.prog.waitFor('R12'), 'R12 feedf00d');
  });
});

test(
  'memory reads and writes through /proc/<tid>/mem, read-only pages included',
  { skip: skipReason ?? false },
  async () => {
    await withTarget(async (t, tracer) => {
      await stopAll(t, tracer);
      assert.equal((await tracer.readMemory(t.block, t.buf, 15)).toString('latin1'), 'ptrace-initial\0');
      await tracer.writeMemory(t.spin, t.buf, Buffer.from('written-by-tracer\0'));
      await tracer.writeMemory(t.main, t.ro, Buffer.from('tracer-wrote-ro\0'));
      assert.equal((await tracer.readMemory(t.main, t.ro, 16)).toString('latin1'), 'tracer-wrote-ro\0');
      assert.equal(mappingOf(t.pid, t.ro)?.perms, 'r--p', 'the page stays read-only');
      await assert.rejects(tracer.readMemory(t.main, 0x1000, 16), (e) =>
        assertSystemError(e, 'EIO', 'pread', '0x1000'),
      );
      await assert.rejects(tracer.writeMemory(t.main, 0x1000, Buffer.alloc(4)), (e) =>
        assertSystemError(e, 'EIO', 'pwrite', '0x1000'),
      );
      await detachAll(t, tracer);
      t.prog.send('buf');
      assert.equal(await t.prog.waitFor('BUF'), 'BUF written-by-tracer');
      t.prog.send('ro');
      assert.equal(await t.prog.waitFor('RO'), 'RO tracer-wrote-ro');
    });
  },
);

test('injected getpid/gettid/mmap/munmap leave every thread as it was', { skip: skipReason ?? false }, async () => {
  await withTarget(async (t, tracer) => {
    await stopAll(t, tracer);
    for (const tid of t.tids) {
      const before = await tracer.getRegs(tid);
      const code = await tracer.readMemory(tid, Number(before.rip), 8);
      assert.equal(await tracer.syscall(tid, SYS.getpid), BigInt(t.pid));
      assert.equal(await tracer.syscall(tid, SYS.gettid), BigInt(tid));
      assert.deepEqual((await tracer.getRegs(tid)).buffer, before.buffer, `tid ${tid}: registers restored`);
      assert.deepEqual(await tracer.readMemory(tid, Number(before.rip), 8), code, `tid ${tid}: code restored`);
    }

    const addr = await tracer.syscall(t.block, SYS.mmap, 0, 4096, PROT_RW, MAP_PRIVATE_ANON, -1, 0);
    assert.ok(addr > 0n && addr % 4096n === 0n, `mmap returned ${addr}`);
    const m = mappingOf(t.pid, addr);
    assert.ok(m && m.start <= Number(addr) && m.perms === 'rw-p', 'the new page shows up in /proc/<pid>/maps');
    await tracer.writeMemory(t.main, Number(addr), Buffer.from('fresh'));
    assert.equal((await tracer.readMemory(t.spin, Number(addr), 5)).toString(), 'fresh');
    assert.equal(await tracer.syscall(t.main, SYS.munmap, addr, 4096), 0n);
    assert.equal(
      readMaps(t.pid).some((x) => x.start <= Number(addr) && Number(addr) < x.end),
      false,
      'the page is gone after munmap',
    );
    assert.equal(await tracer.syscall(t.main, SYS.munmap, 1, 4096), -22n, 'munmap of an unaligned address: -EINVAL');
    await assert.rejects(tracer.syscallOk(t.main, SYS.munmap, 1, 4096), { code: 'EINVAL', errno: -22 });

    await detachAll(t, tracer);
    // The interrupted read(2) calls restarted: both blocked threads still work.
    t.prog.send('wake hello');
    assert.equal(await t.prog.waitFor('WOKE'), 'WOKE 5 hello');
    t.prog.send('check');
    assert.match(await t.prog.waitFor('FPU'), /^FPU OK \d+$/);
  });
});

test('syscalls through a `syscall; int3` gadget, which is verified first', { skip: skipReason ?? false }, async () => {
  await withTarget(async (t, tracer) => {
    await stopAll(t, tracer);
    const page = await tracer.syscall(t.main, SYS.mmap, 0, 4096, PROT_RWX, MAP_PRIVATE_ANON, -1, 0);
    assert.ok(page > 0n);
    const gadget = Number(page);
    await tracer.writeMemory(t.main, gadget, Buffer.from([0x0f, 0x05, 0xcc]));
    const before = await tracer.getRegs(t.spin);
    assert.equal(await tracer.syscallAt(t.main, gadget, SYS.getpid), BigInt(t.pid));
    assert.equal(await tracer.syscallAt(t.spin, gadget, SYS.gettid), BigInt(t.spin));
    assert.deepEqual((await tracer.getRegs(t.spin)).buffer, before.buffer);
    await assert.rejects(tracer.syscallAt(t.main, gadget + 1, SYS.getpid), (e) =>
      assertSystemError(e, 'EINVAL', 'ptrace', 'gadget'),
    );
    // Code on a page that is not executable faults before the syscall runs.
    const data = await tracer.syscall(t.main, SYS.mmap, 0, 4096, PROT_RW, MAP_PRIVATE_ANON, -1, 0);
    await tracer.writeMemory(t.main, Number(data), Buffer.from([0x0f, 0x05, 0xcc]));
    await assert.rejects(tracer.syscallAt(t.main, Number(data), SYS.getpid), (e) =>
      assertSystemError(e, 'EFAULT', 'ptrace', 'before syscall'),
    );
    assert.deepEqual((await tracer.getRegs(t.spin)).buffer, before.buffer);
    // The gadget can unmap itself: the int3 then faults, and the result stands.
    assert.equal(await tracer.syscallAt(t.block, gadget, SYS.munmap, page, 4096), 0n);
    assert.equal(mappingOf(t.pid, page), undefined, 'the gadget page is gone');
    assert.equal(await tracer.syscall(t.block, SYS.munmap, data, 4096), 0n);
    await detachAll(t, tracer);
    t.prog.send('check');
    assert.match(await t.prog.waitFor('FPU'), /^FPU OK \d+$/);
  });
});

test('a signal that arrives during an injection is delivered afterwards', { skip: skipReason ?? false }, async () => {
  await withTarget(async (t, tracer) => {
    await stopAll(t, tracer);
    // With every thread stopped, the process-directed signal waits in the
    // shared queue; the thread resumed for the injection dequeues it first.
    process.kill(t.pid, 'SIGUSR1');
    assert.equal(await tracer.syscall(t.main, SYS.getpid), BigInt(t.pid));
    await tracer.cont(t.main, 0);
    assert.deepEqual(await tracer.wait(t.main, 10_000), { kind: 'stopped', signal: SIGUSR1, event: 0 });
    await tracer.cont(t.main, SIGUSR1);
    await tracer.detach(t.spin, 0);
    await tracer.detach(t.block, 0);
    await tracer.close(); // releases main, which is running
    t.prog.send('sigs');
    assert.equal(await t.prog.waitFor('SIGS'), 'SIGS 1');
  });
});

test(
  'injection refuses an ignored SIGTRAP and keeps a blocked one blocked',
  { skip: skipReason ?? false },
  async () => {
    await withTarget(async (t, tracer) => {
      t.prog.send('trap block');
      await t.prog.waitFor('TRAP blocked');
      await tracer.seizeAndInterrupt(t.main);
      const mask = await tracer.getSigmask(t.main);
      assert.notEqual(mask & (1n << BigInt(SIGTRAP - 1)), 0n);
      assert.equal(await tracer.syscall(t.main, SYS.getpid), BigInt(t.pid));
      assert.equal(await tracer.getSigmask(t.main), mask, 'SIGTRAP is blocked again');
      await tracer.detach(t.main, 0);

      t.prog.send('trap ignore');
      await t.prog.waitFor('TRAP ignored');
      await tracer.seizeAndInterrupt(t.main);
      await assert.rejects(tracer.syscall(t.main, SYS.getpid), (e) =>
        assertSystemError(e, 'EOPNOTSUPP', 'ptrace', 'ignored'),
      );
      await tracer.detach(t.main, 0);
      t.prog.send('trap state');
      assert.equal(await t.prog.waitFor('TRAP'), 'TRAP ign blocked', 'disposition and mask untouched');
    });
  },
);

test('a tracee that exits during an injection rejects with ESRCH', { skip: skipReason ?? false }, async () => {
  const t = await startTarget();
  const tracer = Tracer.open();
  try {
    await stopAll(t, tracer);
    await assert.rejects(tracer.syscall(t.main, SYS.exit_group, 7), (e) =>
      assertSystemError(e, 'ESRCH', 'ptrace', 'exited'),
    );
    // The exit of Node's own child is left for Node to reap; the traced
    // threads are released when the tracer thread ends.
    await tracer.close();
    assert.deepEqual(await t.prog.exit(), { code: 7, signal: null });
  } finally {
    t.prog.kill();
    await tracer.close();
  }
});

test('errors carry code, errno and syscall, and name the request', { skip: skipReason ?? false }, async () => {
  const impossible = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8').trim());
  await withTarget(async (t, tracer) => {
    await assert.rejects(tracer.seize(impossible), (e) => assertSystemError(e, 'ESRCH', 'ptrace', 'PTRACE_SEIZE'));
    await assert.rejects(tracer.getRegs(t.main), (e) => assertSystemError(e, 'ESRCH', 'ptrace', 'PTRACE_GETREGSET'));
    // Not traced by us and not our child (a thread of it): nothing to wait for.
    await assert.rejects(tracer.wait(t.spin, 1000), (e) => assertSystemError(e, 'ECHILD', 'waitpid'));
    await tracer.seize(t.main);
    await assert.rejects(tracer.wait(t.main, 50), (e) => assertSystemError(e, 'ETIMEDOUT', 'waitpid'));
    await assert.rejects(tracer.getRegs(t.main), (e) => assertSystemError(e, 'ESRCH', 'ptrace'), 'a running tracee');
    await assert.rejects(tracer.syscall(t.main, SYS.getpid, 1n << 64n), RangeError);
    await assert.rejects(native.tracerGetRegs({} as never, t.main), TypeError);
  });
});

test('close cancels a pending wait and releases the tracee', { skip: skipReason ?? false }, async () => {
  const t = await startTarget();
  const tracer = Tracer.open();
  try {
    await tracer.seize(t.main);
    const waiting = tracer.wait(t.main); // no timeout: only close can end it
    const closing = tracer.close();
    await assert.rejects(waiting, (e) => assertSystemError(e, 'ECANCELED', 'waitpid'));
    await closing;
    assert.equal(tracerPidOf(t.pid), 0, 'detached when the tracer thread ended');
    t.prog.send('buf');
    assert.equal(await t.prog.waitFor('BUF'), 'BUF ptrace-initial');
    await assert.rejects(tracer.seize(t.main), { code: 'ERR_TRACER_CLOSED' });
    await tracer.close(); // closing twice is fine
  } finally {
    t.prog.kill();
  }
});

test(
  'close interrupts an injected syscall that blocks and restores the tracee',
  { skip: skipReason ?? false },
  async () => {
    const t = await startTarget();
    const tracer = Tracer.open();
    try {
      await stopAll(t, tracer);
      const blocked = tracer.syscall(t.main, PAUSE_NR);
      const closing = tracer.close();
      await assert.rejects(blocked, (e) => assertSystemError(e, 'ECANCELED', 'ptrace'));
      await closing;
      assert.equal(tracerPidOf(t.pid), 0);
      t.prog.send('buf');
      assert.equal(await t.prog.waitFor('BUF'), 'BUF ptrace-initial');
      t.prog.send('wake again');
      assert.equal(await t.prog.waitFor('WOKE'), 'WOKE 5 again');
      t.prog.send('check');
      assert.match(await t.prog.waitFor('FPU'), /^FPU OK \d+$/);
    } finally {
      t.prog.kill();
    }
  },
);

test('a tracer garbage-collected without close releases its tracees', { skip: skipReason ?? false }, async () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const t = await startTarget();
  try {
    const seizeAndDrop = async (): Promise<void> => {
      const tracer = Tracer.open();
      await tracer.seize(t.spin);
    };
    await seizeAndDrop();
    assert.notEqual(tracerPidOf(t.spin), 0, 'seized');
    for (let i = 0; i < 500 && tracerPidOf(t.spin) !== 0; i++) {
      gc();
      await sleep(10);
    }
    assert.equal(tracerPidOf(t.spin), 0, 'released after GC');
    t.prog.send('check');
    assert.match(await t.prog.waitFor('FPU'), /^FPU OK \d+$/);
  } finally {
    t.prog.kill();
  }
});

const tracerModule = fileURLToPath(new URL('../daemon/tracer.js', import.meta.url));

function runNode(script: string): { status: number | null; signal: string | null; stderr: string } {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, signal: r.signal, stderr: r.stderr };
}

test('an idle tracer does not keep Node alive', { skip: skipReason ?? false }, () => {
  const r = runNode(`
    import { Tracer } from ${JSON.stringify(tracerModule)};
    globalThis.keep = Tracer.open();
    await globalThis.keep.getRegs(1).catch(() => {});  // one request, settled: idle again
  `);
  assert.deepEqual(r, { status: 0, signal: null, stderr: '' });
});

test('process exit with a wait pending neither hangs nor crashes', { skip: skipReason ?? false }, () => {
  const r = runNode(`
    import { spawn } from 'node:child_process';
    import { Tracer } from ${JSON.stringify(tracerModule)};
    const child = spawn('sleep', ['100'], { stdio: 'ignore' });
    const tracer = Tracer.open();
    await tracer.seize(child.pid);
    tracer.wait(child.pid).catch(() => {});
    child.kill('SIGKILL');
    process.exit(3);
  `);
  assert.deepEqual(r, { status: 3, signal: null, stderr: '' });
});

test('a worker terminated while its tracer waits releases the tracee', { skip: skipReason ?? false }, async () => {
  const t = await startTarget();
  try {
    const worker = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
      (async () => {
        const { Tracer } = await import(workerData.module);
        const tracer = Tracer.open();
        await tracer.seize(workerData.tid);
        tracer.wait(workerData.tid).catch(() => {});
        parentPort.postMessage('seized');
      })();`,
      { eval: true, workerData: { module: tracerModule, tid: t.spin } },
    );
    const [message] = (await once(worker, 'message')) as [string];
    assert.equal(message, 'seized');
    assert.notEqual(tracerPidOf(t.spin), 0);
    await worker.terminate();
    assert.equal(tracerPidOf(t.spin), 0, 'the environment cleanup ended the tracer thread');
    t.prog.send('check');
    assert.match(await t.prog.waitFor('FPU'), /^FPU OK \d+$/);
  } finally {
    t.prog.kill();
  }
});
