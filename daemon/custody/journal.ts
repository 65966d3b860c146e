/**
 * The custody journal (native/src/page_service_custody.h): one line per change of a task's lazy state, appended by
 * the page service thread before it acts on the change. Reading it back gives, for every task a dead daemon still
 * held, the list of operations that rebuild its lazy state in a successor: the ranges it was given and every
 * remap, remove and unmap since, in order. A forked child starts with its parent's operations up to the fork.
 *
 * Lines (addresses in hex):
 *   A <id> <tag JSON>              adopted (tag: CustodyTag, plus `from` when it was itself taken over)
 *   R <id> <start> <len> <origin> <object> <unit>
 *                                  lazy range (object: shared object id, 0 for private memory; unit: page size)
 *   F <parent> <child>             UFFD_EVENT_FORK
 *   M <id> <from> <to> <len>       UFFD_EVENT_REMAP
 *   X <id> <start> <end>           UFFD_EVENT_REMOVE
 *   P <id> <start> <end>           a hole punched (MADV_REMOVE, as the service told it) through its shared ranges
 *   U <id> <start> <end>           UFFD_EVENT_UNMAP
 *   O <object> <size> <tag JSON>   a shared object (tag: the image and address space of its data)
 *   G <id>                         gone (complete, exited or released: its uffd is closed)
 *   N <text>                       a note ("released": the daemon stopped; "adopted <prefix>": a takeover finished)
 * Page copies are not journaled: a page already in place makes UFFDIO_COPY fail with EEXIST, which counts as done.
 */
import type { CustodyTag } from '../restore/lazy.js';

export type ReplayOp =
  /** object: the shared object the range maps (0 for private memory); unit: its page size. */
  | { kind: 'range'; start: number; len: number; origin: number; object: number; unit: number }
  | { kind: 'remap'; from: number; to: number; len: number }
  | { kind: 'remove' | 'unmap' | 'punch'; start: number; end: number };

/** A shared object, as its O line gave it. */
export interface JournalObject {
  size: number;
  image: string;
  mm: string;
}

export interface JournalTask {
  id: number;
  /** From the adoption; for a forked child, its parent's with pid null. */
  tag: CustodyTag & { from?: string };
  /** Task id of the parent for a forked child. */
  parent: number | null;
  ops: ReplayOp[];
  gone: boolean;
}

export interface Journal {
  tasks: Map<number, JournalTask>;
  /** Shared objects by the predecessor's object id. */
  objects: Map<number, JournalObject>;
  notes: string[];
  /** Lines that could not be read (a torn last line, an unknown record): named in the recovery log. */
  problems: string[];
  /** Tasks a line that could not be read was about: their state is not known exactly. */
  uncertain: Set<number>;
}

function num(s: string | undefined): number {
  const n = Number(s);
  if (s === undefined || !Number.isSafeInteger(n) || n < 0) throw new Error(`bad number ${s}`);
  return n;
}

function parseTag(json: string): CustodyTag & { from?: string } {
  const t = JSON.parse(json) as Partial<CustodyTag & { from: string }>;
  if (typeof t.image !== 'string' || typeof t.mm !== 'string') throw new Error('tag without image and mm');
  return {
    image: t.image,
    mm: t.mm,
    pid: typeof t.pid === 'number' ? t.pid : null,
    ...(typeof t.start === 'number' ? { start: t.start } : {}),
    ...(t.from ? { from: t.from } : {}),
  };
}

/** Applies one line to the journal being read. */
function applyLine(j: Journal, line: string): void {
  const [code, ...f] = line.split(' ');
  const task = (id: number): JournalTask => {
    const t = j.tasks.get(id);
    if (!t) throw new Error(`task ${id} was never adopted`);
    return t;
  };
  switch (code) {
    case 'A': {
      const id = num(f[0]);
      j.tasks.set(id, { id, tag: parseTag(line.slice(line.indexOf(' ', 2) + 1)), parent: null, ops: [], gone: false });
      return;
    }
    case 'F': {
      const parent = task(num(f[0]));
      const id = num(f[1]);
      const { image, mm } = parent.tag;
      j.tasks.set(id, { id, tag: { image, mm, pid: null }, parent: parent.id, ops: [...parent.ops], gone: false });
      return;
    }
    case 'R':
      task(num(f[0])).ops.push({
        kind: 'range',
        start: num(f[1]),
        len: num(f[2]),
        origin: num(f[3]),
        object: num(f[4]),
        unit: num(f[5]),
      });
      return;
    case 'M':
      task(num(f[0])).ops.push({ kind: 'remap', from: num(f[1]), to: num(f[2]), len: num(f[3]) });
      return;
    case 'X':
    case 'U':
    case 'P': {
      const kind = code === 'X' ? 'remove' : code === 'U' ? 'unmap' : 'punch';
      task(num(f[0])).ops.push({ kind, start: num(f[1]), end: num(f[2]) });
      return;
    }
    case 'O': {
      const { image, mm } = parseTag(f.slice(2).join(' '));
      j.objects.set(num(f[0]), { size: num(f[1]), image, mm });
      return;
    }
    case 'G':
      task(num(f[0])).gone = true;
      return;
    case 'N':
      j.notes.push(line.slice(2));
      return;
    default:
      throw new Error('unknown record');
  }
}

export function parseJournal(text: string): Journal {
  const j: Journal = { tasks: new Map(), objects: new Map(), notes: [], problems: [], uncertain: new Set() };
  const lines = text.split('\n');
  // A journal ends with a newline; anything after the last one is a write that did not complete.
  const torn = lines.pop();
  if (torn) lines.push(torn);
  lines.forEach((line, i) => {
    try {
      if (i === lines.length - 1 && torn) throw new Error('torn last line');
      applyLine(j, line);
    } catch (e) {
      j.problems.push(`${(e as Error).message}: ${line.slice(0, 80)}`);
      // An object line names no task: the tasks mapping an object it lacks are found at the takeover.
      const id = line.startsWith('O ') ? NaN : Number(line.split(' ')[line.startsWith('F ') ? 2 : 1]);
      if (Number.isSafeInteger(id)) j.uncertain.add(id);
    }
  });
  return j;
}
