/**
 * pidfd_open / pidfd_getfd / pidfd_send_signal and process_vm_readv/writev on
 * real child processes (test/programs/ptrace_pipe.c).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, readFileSync, readSync } from 'node:fs';
import { native, isSystemError } from '../native/index.js';
import { Program } from './support/programs.js';

interface PipeInfo {
  readFd: number;
  buf: number;
  page: number;
}

async function startPipeProgram(): Promise<{ prog: Program; info: PipeInfo }> {
  const prog = new Program('ptrace_pipe');
  const [, fd, addr, page] = (await prog.waitFor('READY')).split(' ');
  return { prog, info: { readFd: Number(fd), buf: Number.parseInt(addr!, 16), page: Number(page) } };
}

function assertSystemError(fn: () => unknown, code: string, syscall: string, messageIncludes?: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isSystemError(e), `expected a SystemError, got ${String(e)}`);
    assert.equal(e.code, code);
    assert.equal(e.syscall, syscall);
    assert.ok(e.errno < 0);
    if (messageIncludes)
      assert.ok(e.message.includes(messageIncludes), `message "${e.message}" lacks "${messageIncludes}"`);
    return true;
  });
}

/** A pid that cannot exist: pids are always below kernel.pid_max. */
function impossiblePid(): number {
  return Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8').trim());
}

test('pidfdGetfd takes the read end of a child pipe and reads what the child writes', async () => {
  const { prog, info } = await startPipeProgram();
  let pidfd = -1;
  let fd = -1;
  try {
    pidfd = native.pidfdOpen(prog.pid, 0);
    assert.ok(pidfd >= 0);
    fd = native.pidfdGetfd(pidfd, info.readFd);
    assert.ok(fd >= 0);
    prog.send('write hello-from-the-child');
    await prog.waitFor('WROTE');
    const buf = Buffer.alloc(64);
    const n = readSync(fd, buf, 0, buf.length, null);
    assert.equal(buf.subarray(0, n).toString(), 'hello-from-the-child');
  } finally {
    if (fd >= 0) closeSync(fd);
    if (pidfd >= 0) closeSync(pidfd);
    prog.kill();
  }
});

test('pidfdSendSignal SIGTERM kills the child', async () => {
  const { prog } = await startPipeProgram();
  let pidfd = -1;
  try {
    pidfd = native.pidfdOpen(prog.pid, 0);
    native.pidfdSendSignal(pidfd, 15);
    const { signal } = await prog.exit();
    assert.equal(signal, 'SIGTERM');
  } finally {
    if (pidfd >= 0) closeSync(pidfd);
    prog.kill();
  }
});

test('processVmRead/processVmWrite round trip through the child', async () => {
  const { prog, info } = await startPipeProgram();
  try {
    const initial = native.processVmRead(prog.pid, info.buf, 26);
    assert.equal(initial.toString('latin1'), 'lazyrestore-pidfd-initial\0');
    const text = Buffer.from('written-by-process_vm_writev\0');
    assert.equal(native.processVmWrite(prog.pid, info.buf, text), text.length);
    assert.deepEqual(native.processVmRead(prog.pid, info.buf, text.length), text);
    prog.send('print');
    assert.equal(await prog.waitFor('BUF'), 'BUF written-by-process_vm_writev');
  } finally {
    prog.kill();
  }
});

test('processVmRead/Write that cannot move every byte throw EFAULT naming the address', async () => {
  const { prog, info } = await startPipeProgram();
  try {
    const guard = info.buf + info.page;
    const guardHex = '0x' + guard.toString(16);
    // Crossing into the PROT_NONE page: the first page is readable, the second is not.
    assertSystemError(
      () => native.processVmRead(prog.pid, info.buf + info.page - 16, 32),
      'EFAULT',
      'process_vm_readv',
      guardHex,
    );
    assertSystemError(() => native.processVmRead(prog.pid, guard, 8), 'EFAULT', 'process_vm_readv', guardHex);
    assertSystemError(
      () => native.processVmWrite(prog.pid, guard - 8, Buffer.alloc(16, 1)),
      'EFAULT',
      'process_vm_writev',
      guardHex,
    );
  } finally {
    prog.kill();
  }
});

test('pidfd errors carry code, errno and the syscall name', async () => {
  assertSystemError(() => native.pidfdOpen(impossiblePid(), 0), 'ESRCH', 'pidfd_open');
  const { prog } = await startPipeProgram();
  let pidfd = -1;
  try {
    pidfd = native.pidfdOpen(prog.pid, 0);
    assertSystemError(() => native.pidfdGetfd(pidfd, 987), 'EBADF', 'pidfd_getfd');
    assertSystemError(() => native.pidfdSendSignal(pidfd, 12345), 'EINVAL', 'pidfd_send_signal');
    assertSystemError(() => native.processVmRead(impossiblePid(), 4096, 8), 'ESRCH', 'process_vm_readv');
  } finally {
    if (pidfd >= 0) closeSync(pidfd);
    prog.kill();
  }
});
