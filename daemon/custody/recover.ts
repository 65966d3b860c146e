/**
 * Taking over from a daemon that died or stopped (custody/index.ts): the fds its page service deposited come back
 * from the custodian, each task's lazy state is rebuilt by replaying the journal into the new page service, and
 * the tasks are served again from the image store as if nothing had happened. Threads that were waiting on a
 * fault the predecessor had read but not resolved are woken and fault again.
 *
 * Never a guess: a task whose state the journal cannot give exactly (its uffd was being read when the
 * predecessor died, a journal line is unreadable, its fd is missing, its image is gone) is killed, never left to
 * run on zero pages.
 */
import { SIGKILL } from 'node:constants';
import { native } from '../../native/index.js';
import type { PageService } from '../page-service.js';
import { readStat } from '../proc/stat.js';
import { processChildren } from '../proc/tasks.js';
import { LazySession, sourceCache, type CustodyTag } from '../restore/lazy.js';
import type { ImageStore } from '../store/index.js';
import type { Custody, DeadJournal } from './index.js';
import { parseJournal, type Journal, type JournalTask } from './journal.js';

export interface RecoveryReport {
  /** Predecessor page services taken over. */
  journals: string[];
  /** Tasks served again: their process (null for forked children) and image. */
  adopted: Array<{ pid: number | null; image: string; from: string }>;
  /** Processes killed because their lazy state could not be known exactly, with the reason. */
  killed: Array<{ pid: number; reason: string }>;
  problems: string[];
  /** Settles when every adopted task is complete or gone. */
  complete: Promise<unknown>;
}

interface Context {
  custody: Custody;
  service: PageService;
  store: ImageStore;
  report: RecoveryReport;
  sessions: Map<string, LazySession>;
  /** Names whose fd (as taken from the custodian) the new page service owns. */
  owned: Set<string>;
}

/** Takes over every dead predecessor's tasks. Call before the API serves requests. */
export async function recoverTasks(custody: Custody, service: PageService, store: ImageStore): Promise<RecoveryReport> {
  const report: RecoveryReport = { journals: [], adopted: [], killed: [], problems: [], complete: Promise.resolve() };
  const ctx: Context = { custody, service, store, report, sessions: new Map(), owned: new Set() };
  const dead = custody.deadJournals();
  const parsed = dead.map((d) => ({ dead: d, journal: parseJournal(d.text) }));
  // A takeover that finished wrote "adopted <prefix>": that predecessor's journal is superseded.
  const superseded = new Set(
    parsed.flatMap((p) => p.journal.notes.filter((n) => n.startsWith('adopted ')).map((n) => n.slice(8))),
  );
  const taken: Array<{ prefix: string; fds: Map<string, number> }> = [];
  for (const { dead: d, journal } of parsed) {
    const fds = custody.take(d.prefix);
    taken.push({ prefix: d.prefix, fds });
    if (superseded.has(d.prefix)) continue;
    report.journals.push(d.prefix);
    report.problems.push(...journal.problems.map((p) => `${d.prefix}: ${p}`));
    takeOver(ctx, d, journal, fds, superseded);
  }
  for (const { prefix } of taken) service.note(`adopted ${prefix}`);
  if (report.adopted.length > 0 || taken.length > 0) await service.sync();
  // The new names are in custody now: let the old ones go (all of them: a copy left behind would keep a
  // completed task's ranges registered with nobody to serve them).
  for (const { prefix, fds } of taken) {
    for (const [name, fd] of fds) {
      if (!ctx.owned.has(name)) native.closeFd(fd);
      custody.drop(name);
    }
    custody.forget(prefix);
  }
  const sessions = [...ctx.sessions.values()];
  for (const s of sessions) s.start();
  report.complete = Promise.allSettled(sessions.map((s) => s.completion));
  return report;
}

function takeOver(
  ctx: Context,
  d: DeadJournal,
  journal: Journal,
  fds: Map<string, number>,
  superseded: Set<string>,
): void {
  // An adoption record of a takeover that did not finish: its predecessor's journal still counts.
  const live = [...journal.tasks.values()].filter(
    (t) => !t.gone && (t.tag.from === undefined || superseded.has(t.tag.from.slice(0, t.tag.from.lastIndexOf('-')))),
  );
  const reasons = new Map<number, string>();
  for (const t of live) {
    const reason = reasonToKill(d, journal, t, fds.get(`${d.prefix}-${t.id}`));
    if (reason !== null) reasons.set(t.id, reason);
  }
  spreadToSharers(live, reasons);
  const objects = new Map<number, number>();
  for (const t of live) {
    const name = `${d.prefix}-${t.id}`;
    const reason = reasons.get(t.id);
    if (reason !== undefined) {
      kill(ctx, journal, t, reason);
      continue;
    }
    try {
      adopt(ctx, journal, t, name, fds.get(name)!, objects);
      ctx.owned.add(name); // the page service owns this fd now
    } catch (e) {
      kill(ctx, journal, t, `it could not be served again: ${(e as Error).message}`);
    }
  }
}

/** Why a task cannot be taken over exactly, or null. */
function reasonToKill(d: DeadJournal, journal: Journal, t: JournalTask, fd: number | undefined): string | null {
  if (d.marker === t.id) return 'the daemon died while reading its uffd (an event may be lost)';
  if (journal.uncertain.has(t.id)) return 'its journal has an unreadable line';
  if (fd === undefined) return 'its uffd was not in custody';
  const lost = [...objectsOf(t)].find((o) => !journal.objects.has(o));
  if (lost !== undefined) return `the journal line of its shared object ${lost} is missing or unreadable`;
  return null;
}

function objectsOf(t: JournalTask): Set<number> {
  return new Set(t.ops.flatMap((op) => (op.kind === 'range' && op.object !== 0 ? [op.object] : [])));
}

/** A lost event of one task may have been a hole punched in an object it shares: everyone mapping that object
 *  goes with it. */
function spreadToSharers(live: JournalTask[], reasons: Map<number, string>): void {
  const objects = new Map(live.map((t) => [t.id, objectsOf(t)]));
  for (let changed = true; changed;) {
    changed = false;
    for (const t of live) {
      if (!reasons.has(t.id)) continue;
      const shared = objects.get(t.id)!;
      for (const u of live) {
        if (reasons.has(u.id) || ![...objects.get(u.id)!].some((o) => shared.has(o))) continue;
        const who = t.tag.pid !== null ? `process ${t.tag.pid}` : 'a forked task';
        reasons.set(u.id, `it shares memory with ${who}, which cannot be taken over`);
        changed = true;
      }
    }
  }
}

function adopt(
  ctx: Context,
  journal: Journal,
  t: JournalTask,
  name: string,
  fd: number,
  objects: Map<number, number>,
): void {
  const { service } = ctx;
  const entry = sourceCache.get(t.tag.image, t.tag.mm);
  const tag: CustodyTag & { from: string } = { ...t.tag, from: name };
  // Paused until the state is replayed: the faults and events queued while no daemon ran must meet it whole.
  const id = service.addTask(fd, entry.source, t.tag.pid ?? 0, tag, true);
  for (const op of t.ops) {
    // Pages the predecessor placed are lazy again here, until a copy meets them (EEXIST); a hugetlb range keeps
    // its huge page unit, a shared range maps the object made again here.
    if (op.kind === 'range') {
      const object = op.object === 0 ? 0 : sharedObject(ctx, journal, op.object, objects);
      service.addLazyRange(id, op.start, op.len, op.origin, object, op.unit);
    } else if (op.kind === 'remap') service.applyChange(id, 'remap', op.from, op.to, op.len);
    else service.applyChange(id, op.kind, op.start, op.end);
  }
  service.setBackground(id, true);
  service.resume(id);
  session(ctx, t.tag.image).adopt(id, t.tag.pid ?? 0, entry);
  ctx.report.adopted.push({ pid: t.tag.pid, image: t.tag.image, from: name });
}

/** The object of this page service standing for the predecessor's `object`, made on first use. */
function sharedObject(ctx: Context, journal: Journal, object: number, objects: Map<number, number>): number {
  let ours = objects.get(object);
  if (ours === undefined) {
    const o = journal.objects.get(object)!;
    ours = session(ctx, o.image).adoptShared(o.mm, o.size);
    objects.set(object, ours);
  }
  return ours;
}

/** One lazy session per image feeds its sources and kills the adopted tasks if the store cannot give a page. */
function session(ctx: Context, image: string): LazySession {
  let s = ctx.sessions.get(image);
  if (!s) {
    const pids = () => ctx.report.adopted.filter((a) => a.image === image && a.pid !== null).map((a) => a.pid!);
    s = new LazySession(ctx.store, image, ctx.service, false, performance.now(), () => {
      for (const pid of pids()) killPid(ctx, pid, `image ${image} could not give its pages`);
    });
    ctx.sessions.set(image, s);
  }
  return s;
}

/**
 * Kills the process of a task whose state is not known. A forked child's pid was never known (UFFD_EVENT_FORK
 * names none): then every descendant of its nearest ancestor with a known pid goes, since one of them runs on a
 * uffd nobody can serve exactly.
 */
function kill(ctx: Context, journal: Journal, t: JournalTask, reason: string): void {
  if (t.tag.pid !== null) return killPid(ctx, t.tag.pid, reason, t.tag.start);
  let up: JournalTask | undefined = t;
  while (up && up.tag.pid === null) up = up.parent === null ? undefined : journal.tasks.get(up.parent);
  if (!up) {
    ctx.report.problems.push(`a forked task cannot be served (${reason}) and no ancestor is known to kill it`);
    return;
  }
  if (!sameProcess(up.tag.pid!, up.tag.start)) return;
  for (const pid of descendants(up.tag.pid!)) killPid(ctx, pid, `${reason} (a forked child of ${up.tag.pid})`);
}

function descendants(pid: number): number[] {
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    let kids: number[] = [];
    try {
      kids = processChildren(queue.shift()!);
    } catch {
      // gone meanwhile
    }
    out.push(...kids);
    queue.push(...kids);
  }
  return out;
}

/** Whether `pid` is still the process that started at `start` (clock ticks after boot), not a reuse of its pid. */
function sameProcess(pid: number, start: number | undefined): boolean {
  try {
    return start === undefined || readStat(pid).starttime === start;
  } catch {
    return false;
  }
}

function killPid(ctx: Context, pid: number, reason: string, start?: number): void {
  if (!sameProcess(pid, start)) return;
  try {
    process.kill(pid, SIGKILL);
    ctx.report.killed.push({ pid, reason });
  } catch {
    // already gone
  }
}
