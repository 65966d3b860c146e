/**
 * /proc/sysvipc/shm (proc(5), sysvipc): the System V shared memory segments of the reading process's IPC
 * namespace. One header line, then one line per segment:
 *   key shmid perms size cpid lpid nattch uid gid cuid cgid atime dtime ctime rss swap
 * with `key` signed decimal (key_t) and `perms` octal (shm_perm.mode, SHM_DEST and SHM_LOCKED included).
 */
import { readFileSync } from 'node:fs';
import { ProcFormatError } from './read.js';

export interface SysvSegment {
  key: number;
  shmid: number;
  /** shm_perm.mode: permission bits, SHM_DEST (0o1000: removed, goes with its last attach), SHM_LOCKED (0o2000). */
  mode: number;
  size: number;
  nattch: number;
  uid: number;
  gid: number;
  cuid: number;
  cgid: number;
}

export const SHM_DEST = 0o1000;
export const SHM_LOCKED = 0o2000;

const FILE = '/proc/sysvipc/shm';
const COLUMNS = ['key', 'shmid', 'perms', 'size', 'cpid', 'lpid', 'nattch', 'uid', 'gid', 'cuid', 'cgid'];

export function parseSysvShm(text: string, file = FILE): SysvSegment[] {
  const lines = text.split('\n');
  const header = (lines[0] ?? '').trim().split(/\s+/);
  if (COLUMNS.some((c, i) => header[i] !== c)) throw new ProcFormatError(file, 1, lines[0] ?? '', 'unexpected header');
  const out: SysvSegment[] = [];
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '') continue;
    const f = line.split(/\s+/);
    const dec = (k: number) => Number(f[k]);
    const perms = Number.parseInt(f[2] ?? '', 8);
    const seg: SysvSegment = {
      key: dec(0),
      shmid: dec(1),
      mode: perms,
      size: dec(3),
      nattch: dec(6),
      uid: dec(7),
      gid: dec(8),
      cuid: dec(9),
      cgid: dec(10),
    };
    if (f.length < COLUMNS.length || Object.values(seg).some((n) => !Number.isSafeInteger(n)))
      throw new ProcFormatError(file, i + 1, lines[i]!, 'not a segment line');
    out.push(seg);
  }
  return out;
}

/** The segment with id `shmid` in this process's IPC namespace, or null. */
export function readSysvSegment(shmid: number): SysvSegment | null {
  return parseSysvShm(readFileSync(FILE, 'utf8')).find((s) => s.shmid === shmid) ?? null;
}
