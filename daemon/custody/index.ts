/**
 * Custody of the uffds of lazily restored tasks across daemon crashes and restarts (DESIGN §7): the page service
 * deposits every uffd with a custodian and journals every change of the tasks' lazy state (native/src/
 * page_service_custody.h); a successor takes the fds back and replays the journal (recover.ts).
 *
 * The custodian is systemd's fd store when the daemon runs under systemd ($NOTIFY_SOCKET; the unit sets
 * FileDescriptorStoreMax=), and the keeper process (keeper.ts) otherwise. The journals and markers live in
 * `<dir>` (beside the API socket, on tmpfs under /run), one pair per page service:
 * `<prefix>.journal`, `<prefix>.marker`, where the prefix `lr.<pid>.<starttime>.<n>` names the daemon process and
 * the page service, and also prefixes the names of the deposited fds (`<prefix>-<task id>`).
 */
import { appendFileSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { native, type PageServiceCustody } from '../../native/index.js';
import { readStat } from '../proc/stat.js';
import { parseJournal } from './journal.js';
import { connectKeeper, keeperDrop, keeperTake } from './keeper.js';
import { connectNotify, takeListenFds, underSystemd } from './systemd.js';

export type CustodyMode = 'keeper' | 'systemd';

let services = 0;

/** A predecessor's journal that nobody serves any more. */
export interface DeadJournal {
  prefix: string;
  text: string;
  /** The id of the task whose uffd it was reading when it died, 0 when none. */
  marker: number;
}

export class Custody {
  readonly prefix: string;
  readonly #control: number;
  #listenFds: Map<string, number> | null;
  #nativeGiven = false;

  private constructor(
    readonly dir: string,
    readonly mode: CustodyMode,
    control: number,
    listenFds: Map<string, number> | null,
  ) {
    this.prefix = `lr.${process.pid}.${readStat(process.pid).starttime}.${++services}`;
    this.#control = control;
    this.#listenFds = listenFds;
  }

  /** Prepares custody in `dir` (created 0700): under systemd its fd store, else the keeper (started if needed). */
  static async open(dir: string, mode: CustodyMode = underSystemd() ? 'systemd' : 'keeper'): Promise<Custody> {
    // The parent (the socket's directory, usually) as the API would create it; only our own directory is 0700.
    mkdirSync(dirname(dir), { recursive: true, mode: 0o755 });
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (mode === 'systemd') return new Custody(dir, mode, connectNotify(), takeListenFds());
    return new Custody(dir, mode, await connectKeeper(join(dir, 'keeper.sock')), null);
  }

  get journalPath(): string {
    return join(this.dir, `${this.prefix}.journal`);
  }

  /** The fds the native page service takes over (it owns and closes them). Once per Custody. */
  serviceConfig(): PageServiceCustody {
    if (this.#nativeGiven) throw new Error('custody already given to a page service');
    this.#nativeGiven = true;
    const marker = join(this.dir, `${this.prefix}.marker`);
    writeFileSync(marker, Buffer.alloc(8), { mode: 0o600 });
    return {
      journalFd: openSync(this.journalPath, 'a', 0o600),
      markerFd: openSync(marker, 'r+'),
      sinkFd:
        this.mode === 'systemd' ? connectNotify() : native.unixConnect(join(this.dir, 'keeper.sock'), 'seqpacket'),
      mode: this.mode,
      prefix: this.prefix,
    };
  }

  /** Journals of page services that are gone: their process died, or they were closed (note "released"). */
  deadJournals(): DeadJournal[] {
    const out: DeadJournal[] = [];
    for (const file of readdirSync(this.dir).sort()) {
      if (!file.endsWith('.journal')) continue;
      const prefix = file.slice(0, -'.journal'.length);
      if (prefix === this.prefix) continue;
      const text = readFileSync(join(this.dir, file), 'utf8');
      if (!text.includes('\nN released\n') && !text.startsWith('N released\n') && ownerAlive(prefix)) continue;
      out.push({ prefix, text, marker: readMarker(join(this.dir, `${prefix}.marker`)) });
    }
    return out;
  }

  /** Every fd the custodian holds for `prefix`, by name. */
  take(prefix: string): Map<string, number> {
    if (this.mode === 'keeper') return keeperTake(this.#control, `${prefix}-`);
    const out = new Map<string, number>();
    for (const [name, fd] of this.#listenFds ?? []) {
      if (name.startsWith(`${prefix}-`)) {
        out.set(name, fd);
        this.#listenFds!.delete(name);
      }
    }
    return out;
  }

  /** Tells the custodian to close the fd it holds as `name`. */
  drop(name: string): void {
    if (this.mode === 'keeper') keeperDrop(this.#control, name);
    else native.unixSend(this.#control, `FDSTOREREMOVE=1\nFDNAME=${name}`);
  }

  /** Removes a predecessor's journal and marker once it is fully taken over (or had nothing left). */
  forget(prefix: string): void {
    rmSync(join(this.dir, `${prefix}.journal`), { force: true });
    rmSync(join(this.dir, `${prefix}.marker`), { force: true });
  }

  /** The page service has stopped: whatever it still held stays in custody for a successor; a journal with
   *  nothing left in it goes. */
  release(): void {
    try {
      const journal = parseJournal(readFileSync(this.journalPath, 'utf8'));
      if ([...journal.tasks.values()].every((t) => t.gone) && journal.problems.length === 0) this.forget(this.prefix);
      else appendFileSync(this.journalPath, 'N released\n');
    } catch {
      // no journal: the service never started
    }
    // Fds systemd passed that nobody claimed (the store keeps its own copies).
    for (const fd of this.#listenFds?.values() ?? []) native.closeFd(fd);
    this.#listenFds = null;
    native.closeFd(this.#control);
  }
}

/** Whether the process named by a prefix `lr.<pid>.<starttime>.<n>` still runs (the same process, not a reuse). */
function ownerAlive(prefix: string): boolean {
  const [, pid, start] = prefix.split('.');
  try {
    return readStat(Number(pid)).starttime === Number(start);
  } catch {
    return false;
  }
}

function readMarker(path: string): number {
  try {
    const b = readFileSync(path);
    return b.length >= 8 ? Number(b.readBigUInt64LE(0)) : 0;
  } catch {
    return 0;
  }
}
