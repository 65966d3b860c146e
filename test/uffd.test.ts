/**
 * The userfaultfd facility (native/src/uffd.cc) on the real kernel: feature
 * negotiation and its errors, and the resolving ioctls on the memory of a
 * real process whose uffd this test took with pidfd_getfd.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { constants } from 'node:os';
import {
  isSystemError,
  native,
  UFFD_FEATURES,
  UFFDIO_COPY_MODE_DONTWAKE,
  UFFDIO_REGISTER_MODE_MISSING,
  type SystemError,
} from '../native/index.js';
import {
  ask,
  EVENT_FEATURES,
  PAGE,
  patternPages,
  patternWord,
  patternWordBig,
  randomSeed,
  startTarget,
} from './support/uffd.js';

const O_CLOEXEC = 0o2000000;
const O_NONBLOCK = 0o4000;
const UFFDIO_COPY_BIT = 1 << 3; // _UFFDIO_COPY
const UFFDIO_REGISTER_BIT = 1 << 0;

function probeOrSkip(t: { skip: (reason: string) => void }): boolean {
  try {
    native.uffdProbe();
    return true;
  } catch (e) {
    t.skip(`userfaultfd unavailable: ${(e as Error).message}`);
    return false;
  }
}

function expectSystemError(fn: () => unknown, code: string): SystemError {
  try {
    fn();
  } catch (e) {
    assert.ok(isSystemError(e), `expected a SystemError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.equal(e.errno, -(constants.errno as Record<string, number>)[code]!);
    assert.equal(typeof e.syscall, 'string');
    return e;
  }
  assert.fail(`expected ${code}`);
}

test('the TS pattern matches the BigInt reference of lr_pattern_word', () => {
  for (let i = 0; i < 200; i++) {
    const seed = randomSeed();
    const addr = Math.floor(Math.random() * 2 ** 44) * 8;
    assert.equal(patternWord(seed, addr), patternWordBig(seed, addr));
  }
});

test('uffdProbe reports the kernel features through a throw-away uffd', (t) => {
  if (!probeOrSkip(t)) return;
  const p = native.uffdProbe();
  assert.ok(p.via === 'syscall' || p.via === '/dev/userfaultfd');
  assert.ok(p.features > 0);
  assert.notEqual(p.ioctls & UFFDIO_REGISTER_BIT, 0);
});

test('uffdApi names the features the kernel lacks, and refuses a second negotiation', (t) => {
  if (!probeOrSkip(t)) return;
  const fd = native.uffdCreate(O_CLOEXEC | O_NONBLOCK);
  try {
    const err = expectSystemError(() => native.uffdApi(fd, 2 ** 62), 'EINVAL');
    assert.deepEqual(err.missingFeatures, ['UFFD_FEATURE_BIT_62']);
    assert.match(err.message, /UFFD_FEATURE_BIT_62/);
    assert.equal(err.syscall, 'ioctl');

    // The refused request left the uffd unnegotiated.
    const available = native.uffdProbe().features;
    if ((available & EVENT_FEATURES) !== EVENT_FEATURES) {
      t.skip('the kernel lacks a non-cooperative event feature');
      return;
    }
    const ok = native.uffdApi(fd, EVENT_FEATURES);
    assert.equal(ok.features, EVENT_FEATURES);
    assert.notEqual(ok.ioctls & UFFDIO_REGISTER_BIT, 0);

    const again = expectSystemError(() => native.uffdApi(fd, UFFD_FEATURES.UFFD_FEATURE_EVENT_REMAP), 'EINVAL');
    assert.equal(again.missingFeatures, undefined);
    assert.match(again.message, /already negotiated/);
  } finally {
    native.closeFd(fd);
  }
});

test('closeFd of a closed descriptor throws EBADF', (t) => {
  if (!probeOrSkip(t)) return;
  const fd = native.uffdCreate(O_CLOEXEC);
  native.closeFd(fd);
  expectSystemError(() => native.closeFd(fd), 'EBADF');
});

test('COPY, ZEROPAGE and WAKE act on another process, with EEXIST and ENOENT reported', async (t) => {
  if (!probeOrSkip(t)) return;
  const target = await startTarget(1);
  const { prog, uffd, addr } = target;
  try {
    native.uffdApi(uffd, EVENT_FEATURES);
    // Only the first half is registered: the second half is an address the
    // uffd cannot fill.
    const half = target.len / 2;
    const ioctls = native.uffdRegister(uffd, addr, half, UFFDIO_REGISTER_MODE_MISSING);
    assert.notEqual(ioctls & UFFDIO_COPY_BIT, 0);

    const seed = randomSeed();
    const data = patternPages(seed, addr, 2 * PAGE);
    assert.equal(native.uffdCopy(uffd, addr, data, 0), 2 * PAGE);
    assert.equal(native.uffdZeropage(uffd, addr + 2 * PAGE, PAGE, 0), PAGE);

    const exists = expectSystemError(() => native.uffdCopy(uffd, addr + PAGE, data, 0), 'EEXIST');
    assert.equal(exists.bytesCopied, 0);
    assert.equal(exists.syscall, 'ioctl');
    const zexists = expectSystemError(() => native.uffdZeropage(uffd, addr, PAGE, 0), 'EEXIST');
    assert.equal(zexists.bytesCopied, 0);
    // A copy that crosses into the unregistered half stops at the VMA end.
    const outside = expectSystemError(
      () => native.uffdCopy(uffd, addr + half, patternPages(seed, addr + half, PAGE), UFFDIO_COPY_MODE_DONTWAKE),
      'ENOENT',
    );
    assert.equal(outside.bytesCopied, 0);
    native.uffdWake(uffd, addr, PAGE);

    // The pages are really there in the other process, with our data.
    assert.equal(await ask(prog, `check ${seed} 0 ${2 * PAGE}`), 'OK');
    assert.equal(await ask(prog, `zero ${2 * PAGE} ${PAGE}`), 'OK');
    native.uffdUnregister(uffd, addr, half);
  } finally {
    prog.kill();
    native.closeFd(uffd);
  }
});
