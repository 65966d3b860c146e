/**
 * Files, pipes and FIFOs of a restored tree (open(2), fstat(2), pipe(7), fifo(7), pidfd_getfd(2), dup3(2),
 * lseek(2), fcntl(2) F_SETFL).
 *
 * The restoring process opens every object itself, before any task exists, and checks that each is the file the
 * image names (device, inode and, for regular files, size): a file that changed refuses the restore with nothing
 * created. A task then takes its copy with pidfd_getfd from its pidfd for the restoring process and dup3s it to
 * the dumped number. Pipes are created here once per pipe id, with their buffered data written back, so every fd
 * naming a pipe, in any process, shares it as before.
 */
import { closeSync, constants, fstatSync, openSync, writeSync } from 'node:fs';
import { native } from '../../native/index.js';
import { devMajorMinor } from '../proc/index.js';
import { LazyRestoreError } from '../errors.js';
import type { FdRecord, PipeRecord, ProcessRecord, VmaRecord } from '../dump/image.js';
import type { RestoreImage } from './image.js';
import { F, O_ACCMODE, O_CLOEXEC, O_NOCTTY, O_NONBLOCK, SYS } from './sys.js';
import type { Batch, Ref } from './inject.js';

type FileRef = { path: string; dev: number; ino: number; size?: number };

function changed(path: string, why: string): LazyRestoreError {
  return new LazyRestoreError('FILE_CHANGED', `${path} ${why} since the dump`);
}

function openChecked(path: string, flags: number, expect: FileRef | null): number {
  let fd: number;
  try {
    fd = openSync(path, flags | O_NOCTTY);
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ENOENT') throw changed(path, 'has been removed');
    throw new LazyRestoreError('FILE_CHANGED', `cannot open ${path}: ${(e as Error).message}`, { cause: e });
  }
  if (expect === null) return fd;
  const st = fstatSync(fd, { bigint: true });
  let why: string | null = null;
  if (Number(st.dev) !== expect.dev || Number(st.ino) !== expect.ino) why = 'is another file (renamed or replaced)';
  else if (expect.size !== undefined && st.isFile() && Number(st.size) !== expect.size) {
    why = `changed size (${expect.size} -> ${st.size} bytes)`;
  }
  if (why !== null) {
    closeSync(fd);
    throw changed(path, why);
  }
  return fd;
}

function writeAll(fd: number, data: Buffer): void {
  for (let done = 0; done < data.length;) done += writeSync(fd, data, done, data.length - done);
}

/** Everything the restoring process holds open for the tasks to copy; closed once the tree is released. */
export class NodeFiles {
  private readonly owned: number[] = [];
  private readonly mappings = new Map<string, number>();
  private readonly exes = new Map<number, number>();
  private readonly fdObjects = new Map<string, number>();
  private readonly pipeEnds = new Map<string, { read: number; write: number }>();
  private readonly fifoAnchors = new Map<string, number>();
  private readonly shmemFds = new Map<string, number>();
  private readonly descriptions = new Map<string, number>();
  readonly notes: string[] = [];

  private own(fd: number): number {
    this.owned.push(fd);
    return fd;
  }

  /** Opens and checks every file, pipe and FIFO of the image. */
  openAll(img: RestoreImage): void {
    for (const pipe of img.pipes.values()) this.createPipe(pipe);
    for (const p of img.processes) {
      const rec = p.record;
      if (rec === null) continue;
      this.exes.set(rec.pid, this.own(openChecked(rec.exe.path, constants.O_RDONLY, rec.exe)));
      for (const v of rec.vmas) if (v.file && v.content === 'file') this.mappingFd(v);
      for (const f of rec.fds) this.fdObjects.set(`${rec.pid}/${f.fd}`, this.sharedOrOpen(rec, f, img));
    }
  }

  private createPipe(pipe: PipeRecord): void {
    const data = Buffer.from(pipe.data, 'base64');
    if (data.length > pipe.size)
      throw new LazyRestoreError(
        'CORRUPT_IMAGE',
        `pipe ${pipe.id}: ${data.length} bytes buffered in a pipe of ${pipe.size}`,
      );
    if (pipe.externalPids && pipe.externalPids.length > 0) {
      this.notes.push(
        `pipe ${pipe.id} was shared with processes outside the tree (${pipe.externalPids.join(', ')}); ` +
          'its ends they held are closed',
      );
    }
    if (pipe.fifo) {
      // O_RDWR never blocks on a FIFO and keeps it open while the tasks open their ends.
      const anchor = this.own(openChecked(pipe.fifo.path, constants.O_RDWR | O_NONBLOCK, pipe.fifo));
      this.fifoAnchors.set(pipe.id, anchor);
      writeAll(anchor, data);
      return;
    }
    const [read, write] = native.restorePipe(pipe.size);
    this.own(read);
    this.own(write);
    writeAll(write, data);
    this.pipeEnds.set(pipe.id, { read, write });
  }

  /**
   * fds that shared one open file description when dumped (dup'ed, inherited across fork) share one again, so
   * they keep sharing the offset: when the image says so with `description` (optional, see
   * docs/image-format.md); without it each fd gets a description of its own.
   */
  private sharedOrOpen(rec: ProcessRecord, f: FdRecord, img: RestoreImage): number {
    const description = f.description;
    if (description === undefined || f.kind === 'pipe') return this.openFd(rec, f, img);
    let fd = this.descriptions.get(description);
    if (fd === undefined) {
      fd = this.openFd(rec, f, img);
      this.descriptions.set(description, fd);
    }
    return fd;
  }

  private openFd(rec: ProcessRecord, f: FdRecord, img: RestoreImage): number {
    const where = `process ${rec.pid} fd ${f.fd}`;
    switch (f.kind) {
      case 'file':
        return this.own(openChecked(f.path, f.flags, f));
      case 'directory':
        return this.own(openChecked(f.path, f.flags | constants.O_DIRECTORY, null));
      case 'chardev': {
        const fd = this.own(openChecked(f.path, f.flags, null));
        const st = fstatSync(fd);
        const { major, minor } = devMajorMinor(st.rdev);
        if (!st.isCharacterDevice() || major !== f.rdev[0] || minor !== f.rdev[1]) {
          throw changed(f.path, `is no longer character device ${f.rdev.join(':')}`);
        }
        return fd;
      }
      case 'pipe': {
        const ends = this.pipeEnds.get(f.pipe);
        if (!ends) throw new LazyRestoreError('CORRUPT_IMAGE', `${where} names pipe ${f.pipe}, which the image lacks`);
        return f.end === 'read' ? ends.read : ends.write;
      }
      case 'fifo': {
        const pipe = img.pipes.get(f.pipe);
        if (!pipe?.fifo)
          throw new LazyRestoreError('CORRUPT_IMAGE', `${where} names FIFO ${f.pipe}, which the image lacks`);
        return this.own(openChecked(f.path, (f.flags & O_ACCMODE) | O_NONBLOCK, pipe.fifo));
      }
      default:
        throw new LazyRestoreError('UNSUPPORTED_IMAGE', `${where} is of a kind this restore does not know`);
    }
  }

  /** The fd to map a file VMA from: read-only unless a shared mapping may be written. */
  mappingFd(v: VmaRecord): number {
    const file = v.file;
    if (!file) throw new Error(`mapping 0x${v.start.toString(16)} has no file`);
    const writable = v.shared && v.vmFlags.includes('mw');
    const key = `${file.path}\0${writable ? 'rw' : 'r'}`;
    let fd = this.mappings.get(key);
    if (fd === undefined) {
      fd = this.own(openChecked(file.path, writable ? constants.O_RDWR : constants.O_RDONLY, file));
      this.mappings.set(key, fd);
    }
    return fd;
  }

  exeFd(pid: number): number {
    const fd = this.exes.get(pid);
    if (fd === undefined) throw new Error(`no executable opened for process ${pid}`);
    return fd;
  }

  shmemFd(id: string): number | undefined {
    return this.shmemFds.get(id);
  }

  setShmemFd(id: string, fd: number): void {
    this.shmemFds.set(id, this.own(fd));
  }

  /**
   * Queues the installation of every fd of `rec` in its task: each object is first copied above every dumped
   * number (so no copy can land on a number another fd needs), then dup3'd into place; files get their offset
   * back, pipe and FIFO ends their status flags.
   */
  installFds(b: Batch, rec: ProcessRecord, restorerPidfd: number, above: number): void {
    const high: Ref[] = [];
    for (const f of rec.fds) {
      const nodeFd = this.fdObjects.get(`${rec.pid}/${f.fd}`);
      if (nodeFd === undefined) throw new Error(`process ${rec.pid} fd ${f.fd} was not opened`);
      const got = b.call(`pidfd_getfd(fd ${f.fd})`, SYS.pidfd_getfd, [restorerPidfd, nodeFd, 0]);
      high.push(b.call(`fcntl(F_DUPFD_CLOEXEC) for fd ${f.fd}`, SYS.fcntl, [got, F.DUPFD_CLOEXEC, above]));
      b.call('close', SYS.close, [got]);
    }
    rec.fds.forEach((f, i) => {
      const tmp = high[i]!;
      b.call(`dup3(fd ${f.fd})`, SYS.dup3, [tmp, f.fd, f.cloexec ? O_CLOEXEC : 0]);
      b.call('close', SYS.close, [tmp]);
      if ((f.kind === 'file' || f.kind === 'directory') && f.pos > 0)
        b.call(`lseek(fd ${f.fd})`, SYS.lseek, [f.fd, f.pos, 0]);
      if (f.kind === 'pipe' || f.kind === 'fifo')
        b.call(`fcntl(fd ${f.fd}, F_SETFL)`, SYS.fcntl, [f.fd, F.SETFL, f.flags]);
    });
  }

  /** Closes what this process holds: the tasks have their own copies by now. */
  closeAll(): void {
    for (const fd of this.owned.splice(0)) {
      try {
        closeSync(fd);
      } catch {
        // already closed
      }
    }
  }
}
