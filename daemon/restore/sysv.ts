/**
 * System V shared memory (shmget(2), shmctl(2), shmop(2), proc(5) /proc/sys/kernel/shm_next_id).
 *
 * A segment belongs to the IPC namespace, not to the processes attached to it: it outlives the dumped tree unless
 * it was removed (IPC_RMID). So restore reattaches a segment that still exists on this host with the same id, key
 * and size, as it is (like a shared mapping of a file: its contents are the segment's, not the image's), and
 * recreates one that is gone with its key, id (through shm_next_id), size, owner and permissions, filled from the
 * image before the tree runs: userfaultfd cannot register shmat attaches (UFFDIO_REGISTER fails with EINVAL on
 * them), so the pages cannot be left lazy. Every task then attaches it itself with an injected shmat(2) at the
 * dumped address, so that shmdt(2) and shm_nattch see ordinary attaches. A recreated segment that was removed at
 * dump time is removed again once every task has attached it.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { native, type ShmStat } from '../../native/index.js';
import { LazyRestoreError } from '../errors.js';
import type { ShmemRecord, SysvShmRecord, VmaRecord } from '../dump/image.js';
import type { RestoreContext } from './context.js';
import type { RestoreImage } from './image.js';
import { fileWriter, writeObject } from './objects.js';
import type { Batch } from './inject.js';
import { PAGE, PROT, SHM_RDONLY, SYS } from './sys.js';

const NEXT_ID = '/proc/sys/kernel/shm_next_id';
const IPC_CREAT = 0o1000;
const IPC_EXCL = 0o2000;

/** What this restore does with one segment of the image. */
export interface SysvSegmentPlan {
  /** The image's shared object id (`sysv-<shmid>`). */
  id: string;
  rec: SysvShmRecord;
  size: number;
  /** Recreated by this restore (and filled from the image), else the live segment is attached as it is. */
  create: boolean;
}

function hex(key: number): string {
  return `0x${(key >>> 0).toString(16).padStart(8, '0')}`;
}

function describe(rec: SysvShmRecord): string {
  return `System V shared memory segment ${rec.shmid} (key ${hex(rec.key)})`;
}

function conflict(rec: SysvShmRecord, why: string): LazyRestoreError {
  return new LazyRestoreError(
    'IPC_ID_IN_USE',
    `${describe(rec)} of the image cannot be recreated: ${why}; remove it (ipcrm) or restore on another host: ` +
      'nothing was restored',
  );
}

function sameSegment(live: ShmStat, rec: SysvShmRecord, size: number): boolean {
  return !rec.removed && live.key === rec.key && live.size === size && (live.mode & 0o1000) === 0;
}

function planOne(s: ShmemRecord, notes: string[]): SysvSegmentPlan {
  const rec = s.sysv!;
  const live = native.shmStat(rec.shmid);
  if (live) {
    if (!sameSegment(live, rec, s.size))
      throw conflict(rec, `id ${rec.shmid} belongs to another segment here (key ${hex(live.key)}, ${live.size} bytes)`);
    notes.push(`${describe(rec)} still exists on this host: attached as it is, its contents not rewritten`);
    return { id: s.id, rec, size: s.size, create: false };
  }
  if (rec.key !== 0) {
    let other: number | null = null;
    try {
      other = native.shmGet(rec.key, 0, 0);
    } catch (e) {
      if ((e as { code?: string }).code !== 'ENOENT') throw e;
    }
    if (other !== null) throw conflict(rec, `key ${hex(rec.key)} belongs to segment ${other} here`);
  }
  return { id: s.id, rec, size: s.size, create: true };
}

/** Decides, before anything is created, what happens to each segment; refuses ids or keys taken by others. */
export function planSysv(img: RestoreImage, eager: boolean, notes: string[]): Map<string, SysvSegmentPlan> {
  const out = new Map<string, SysvSegmentPlan>();
  for (const s of img.shmem.values()) if (s.kind === 'sysv') out.set(s.id, planOne(s, notes));
  const created = [...out.values()].filter((p) => p.create);
  if (!eager && created.length > 0) {
    const mib = created.reduce((n, p) => n + p.size, 0) / 2 ** 20;
    notes.push(
      `System V shared memory (${created.length} segment(s), ${mib.toFixed(1)} MiB) restored eagerly: ` +
        'userfaultfd cannot register shmat(2) attaches',
    );
  }
  return out;
}

/** A failed shmget can leave shm_next_id set, and it cannot be written back to -1 (the sysctl's minimum is 0):
 *  a throw-away segment consumes it, so that nobody else's next segment gets the id. */
function unsetNextId(): void {
  if (readFileSync(NEXT_ID, 'utf8').trim() === '-1') return;
  native.shmRemove(native.shmGet(0, PAGE, IPC_CREAT | 0o600));
}

/** shmget with the dumped id: shm_next_id names the id the next segment of this IPC namespace gets (and is
 *  reset by that shmget). Each id goes into `created` as soon as the segment exists. */
function createOne(p: SysvSegmentPlan, created: number[]): void {
  const { rec } = p;
  writeFileSync(NEXT_ID, `${rec.shmid}\n`);
  let id: number;
  try {
    id = native.shmGet(rec.key, p.size, IPC_CREAT | IPC_EXCL | rec.mode);
  } catch (e) {
    unsetNextId();
    throw e;
  }
  created.push(id);
  if (id !== rec.shmid) {
    throw new LazyRestoreError(
      'RESTORE_FAILED',
      `${describe(rec)}: shmget gave id ${id} (another segment was created at the same moment?)`,
    );
  }
  native.shmSet(id, rec.uid, rec.gid, rec.mode);
  if (rec.locked) native.shmLock(id);
}

/** Creates the segments planned for creation; `created` collects their ids (removed again on a failure). */
export function createSysv(plans: Map<string, SysvSegmentPlan>, created: number[]): void {
  for (const p of plans.values()) if (p.create) createOne(p, created);
}

/** Once every task has attached: removes again the segments that were removed at dump time. */
export function removeDumpedRemoved(plans: Map<string, SysvSegmentPlan>): void {
  for (const p of plans.values()) if (p.create && p.rec.removed) native.shmRemove(p.rec.shmid);
}

/** After a failure: removes every segment this restore created (those already marked go with their attaches). */
export function removeCreated(created: number[]): void {
  for (const id of created) native.shmRemove(id);
  created.length = 0;
}

/** One shmat of a task: the pieces of the image that share its base address (the dump shows an attach split
 *  by munmap or mprotect as several VMAs with offsets into the segment). */
interface Attach {
  shmid: number;
  base: number;
  size: number;
  pieces: VmaRecord[];
}

function attachesOf(vmas: VmaRecord[], plans: Map<string, SysvSegmentPlan>): Attach[] {
  const byBase = new Map<string, Attach>();
  for (const v of vmas) {
    const p = v.shmem !== undefined ? plans.get(v.shmem) : undefined;
    if (!p) continue;
    const base = v.start - v.offset;
    const key = `${p.rec.shmid}@${base}`;
    let a = byBase.get(key);
    if (!a) byBase.set(key, (a = { shmid: p.rec.shmid, base, size: Math.ceil(p.size / PAGE) * PAGE, pieces: [] }));
    a.pieces.push(v);
  }
  return [...byBase.values()];
}

/** The address ranges the attaches of `vmas` occupy while they are made: the whole segment from each base. */
export function sysvSpans(
  vmas: VmaRecord[],
  plans: Map<string, SysvSegmentPlan>,
): Array<{ start: number; end: number }> {
  return attachesOf(vmas, plans).map((a) => ({ start: a.base, end: a.base + a.size }));
}

/** Whether `v` is a System V attach (mapped by {@link attachSysv}, not by mmap). */
export function isSysvVma(v: VmaRecord, plans: Map<string, SysvSegmentPlan>): boolean {
  return v.content === 'shmem' && v.shmem !== undefined && plans.has(v.shmem);
}

/**
 * Queues the attaches of one task: each whole segment at its base (read-only when the attach could never be
 * written: no VM_MAYWRITE), then the parts of it the dump did not have unmapped again, and each piece given its
 * own protection. Runs before the task's other mappings, which may lie in those parts.
 */
export function attachSysv(b: Batch, vmas: VmaRecord[], plans: Map<string, SysvSegmentPlan>): void {
  for (const a of attachesOf(vmas, plans)) {
    const writable = a.pieces.some((v) => v.vmFlags.includes('mw'));
    b.call(`shmat(${a.shmid} at 0x${a.base.toString(16)})`, SYS.shmat, [a.shmid, a.base, writable ? 0 : SHM_RDONLY]);
    const prot = PROT.READ | (writable ? PROT.WRITE : 0);
    let at = a.base;
    for (const v of [...a.pieces].sort((x, y) => x.start - y.start)) {
      if (v.start > at) b.call('munmap(part of an attach)', SYS.munmap, [at, v.start - at]);
      if (v.prot !== prot) b.call('mprotect(part of an attach)', SYS.mprotect, [v.start, v.end - v.start, v.prot]);
      at = v.end;
    }
    if (at < a.base + a.size) b.call('munmap(part of an attach)', SYS.munmap, [at, a.base + a.size - at]);
  }
}

/** Writes the image's contents into every segment this restore created; returns the bytes written. */
export async function fillSysv(ctx: RestoreContext): Promise<number> {
  let bytes = 0;
  for (const p of ctx.sysv.values()) {
    if (!p.create) continue;
    const fd = native.shmFile(p.rec.shmid);
    try {
      bytes += await writeObject(ctx, p.id, fileWriter(fd));
    } finally {
      native.closeFd(fd);
    }
  }
  return bytes;
}
