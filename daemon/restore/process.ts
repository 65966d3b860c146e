/**
 * Per-process state of a restored task once its memory is in place (chdir(2), umask(2), rt_sigaction(2),
 * prlimit(2), personality(2), prctl(2) PR_SET_MM_MAP / PR_SET_PDEATHSIG / PR_SET_NAME, pidfd_open(2),
 * pidfd_getfd(2)): files at their numbers, cwd, umask, signal dispositions, the mm fields behind brk(2),
 * /proc/<pid>/exe and cmdline, personality, parent-death signal, name, resource limits.
 */
import { LazyRestoreError } from '../errors.js';
import type { ProcessRecord } from '../dump/image.js';
import type { ProcTask, RestoreContext } from './context.js';
import type { NodeFiles } from './files.js';
import type { Batch, Ref } from './inject.js';
import type { RestoreImage } from './image.js';
import {
  F,
  KSIGACTION_SIZE,
  O_CLOEXEC,
  PR,
  PR_SET_MM_MAP,
  PRCTL_MM_MAP_SIZE,
  SIGKILL,
  SIGSTOP,
  SIGSET_SIZE,
  SYS,
} from './sys.js';

/** Refuses process state this restore cannot give back, before anything is created. */
export function checkProcesses(img: RestoreImage): void {
  for (const p of img.processes) {
    const rec = p.record;
    if (rec === null) continue;
    if (rec.root !== '/') {
      throw new LazyRestoreError(
        'UNSUPPORTED_IMAGE',
        `process ${rec.pid}: its root directory is ${rec.root} (chroot is not restored)`,
        {
          pid: rec.pid,
        },
      );
    }
  }
}

/** The first fd number above every fd of the process (the restore's own fds in the task live there). */
export function fdsAbove(rec: ProcessRecord): number {
  return Math.max(2, ...rec.fds.map((f) => f.fd)) + 1;
}

/**
 * Queues pidfd_open of the restoring process in the task, moved to fd `at` (above every dumped fd): the task
 * takes every object the restoring process opened for it through this pidfd.
 */
export function openRestorerPidfd(b: Batch, at: number): Ref {
  const low = b.call('pidfd_open(restorer)', SYS.pidfd_open, [process.pid, 0]);
  const high = b.call('fcntl(F_DUPFD_CLOEXEC, pidfd)', SYS.fcntl, [low, F.DUPFD_CLOEXEC, at]);
  b.call('close', SYS.close, [low]);
  return high;
}

function u64(v: number | bigint | string): bigint {
  return BigInt.asUintN(64, BigInt(v));
}

/** struct prctl_mm_map with the dumped mm fields, auxv (written beside it) and exe fd. */
function mmMap(b: Batch, rec: ProcessRecord, exeFd: number): number {
  const auxv = Buffer.from(rec.mm.auxv, 'base64');
  const auxvAddr = b.put(auxv);
  const m = Buffer.alloc(PRCTL_MM_MAP_SIZE);
  const fields = [
    rec.mm.startCode,
    rec.mm.endCode,
    rec.mm.startData,
    rec.mm.endData,
    rec.mm.startBrk,
    rec.mm.brk,
    rec.mm.startStack,
    rec.mm.argStart,
    rec.mm.argEnd,
    rec.mm.envStart,
    rec.mm.envEnd,
    auxvAddr,
  ];
  fields.forEach((v, i) => m.writeBigUInt64LE(u64(v), i * 8));
  m.writeUInt32LE(auxv.length, 96);
  m.writeUInt32LE(exeFd, 100);
  return b.put(m);
}

function sigaction(b: Batch, s: ProcessRecord['sigactions'][number]): number {
  const k = Buffer.alloc(KSIGACTION_SIZE);
  k.writeBigUInt64LE(u64(s.handler), 0);
  k.writeBigUInt64LE(u64(s.flags), 8);
  k.writeBigUInt64LE(u64(s.restorer), 16);
  k.writeBigUInt64LE(u64(s.mask), 24);
  return b.put(k);
}

/**
 * Everything per process after the layout, in one batch: fds, cwd, umask, handlers, mm fields and exe,
 * personality, parent-death signal, name; then the pidfd for the restoring process is closed and the resource
 * limits set last (they may be lower than the fd numbers used meanwhile).
 */
export async function restoreProcessState(ctx: RestoreContext, task: ProcTask, files: NodeFiles): Promise<void> {
  const rec = task.image.record!;
  const pidfd = task.restorerPidfd!;
  const exeAt = fdsAbove(rec) + 1;
  const b = ctx.batch(task);
  // The exe first: no dumped fd is installed yet, so its copy cannot land on exeAt.
  const exe = b.call('pidfd_getfd(exe)', SYS.pidfd_getfd, [pidfd, files.exeFd(rec.pid), 0]);
  b.call('dup3(exe)', SYS.dup3, [exe, exeAt, O_CLOEXEC]);
  b.call('close', SYS.close, [exe]);
  files.installFds(b, rec, pidfd, exeAt + 1);
  b.call(`chdir(${rec.cwd})`, SYS.chdir, [b.putString(rec.cwd)]);
  b.call('umask', SYS.umask, [rec.umask], { allowFail: true });
  for (const s of rec.sigactions) {
    if (s.signo === SIGKILL || s.signo === SIGSTOP) continue;
    b.call(`rt_sigaction(${s.signo})`, SYS.rt_sigaction, [s.signo, sigaction(b, s), 0, SIGSET_SIZE]);
  }
  b.call('prctl(PR_SET_MM, PR_SET_MM_MAP)', SYS.prctl, [
    PR.SET_MM,
    PR_SET_MM_MAP,
    mmMap(b, rec, exeAt),
    PRCTL_MM_MAP_SIZE,
    0,
  ]);
  b.call('close', SYS.close, [exeAt]);
  b.call('personality', SYS.personality, [rec.personality]);
  if (rec.pdeathsig !== 0) b.call('prctl(PR_SET_PDEATHSIG)', SYS.prctl, [PR.SET_PDEATHSIG, rec.pdeathsig]);
  b.call('prctl(PR_SET_NAME)', SYS.prctl, [PR.SET_NAME, b.putString(rec.comm.slice(0, 15))]);
  b.call('close(restorer pidfd)', SYS.close, [pidfd]);
  for (const l of rec.rlimits) {
    const r = Buffer.alloc(16);
    r.writeBigUInt64LE(u64(l.soft), 0);
    r.writeBigUInt64LE(u64(l.hard), 8);
    b.call(`prlimit64(${l.resource})`, SYS.prlimit64, [0, l.resource, b.put(r), 0]);
  }
  await b.run();
  task.restorerPidfd = null;
}
