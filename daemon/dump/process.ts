/**
 * Per-process state read from /proc (proc(5): stat, status, limits, auxv, personality, comm, exe/cwd/root,
 * ns/) and the per-process checks that refuse what restore cannot recreate: foreign namespaces, seccomp
 * filters, threads with credentials of their own.
 */
import { statSync } from 'node:fs';
import {
  readAuxv,
  readComm,
  readLimits,
  readLinks,
  readPersonality,
  readStat,
  readStatus,
  sameNamespacesAs,
  type ProcLinks,
  type ProcStat,
  type ProcStatus,
} from '../proc/index.js';
import type { Problem } from '../errors.js';
import { base64, hex64, type CredsRecord, type MmRecord, type ProcessRecord, type RlimitRecord } from './image.js';

const SIGTRAP_BIT = 1n << 4n;

export interface ProcessFacts {
  pid: number;
  stat: ProcStat;
  status: ProcStatus;
  links: ProcLinks;
  comm: string;
}

export function readProcessFacts(pid: number): ProcessFacts {
  return { pid, stat: readStat(pid), status: readStatus(pid), links: readLinks(pid), comm: readComm(pid) };
}

/** Refusals that concern a whole process (its namespaces, its seccomp filters, its tracer). */
export function checkProcess(f: ProcessFacts): Problem[] {
  const pid = f.pid;
  const out: Problem[] = [];
  const foreign = sameNamespacesAs(pid, 'self');
  for (const ns of foreign) {
    out.push({
      code: 'UNSUPPORTED_NAMESPACE',
      pid,
      what: `namespace ${ns}`,
      message: `process ${pid} (${f.comm}): its ${ns} namespace is not the dumping process's own`,
    });
  }
  if ((f.status.sigIgn & SIGTRAP_BIT) !== 0n) {
    out.push({
      code: 'UNSUPPORTED_TASK',
      pid,
      what: 'SIGTRAP',
      message: `process ${pid} (${f.comm}) ignores SIGTRAP, which the dump's injected syscalls trap with`,
    });
  }
  if (f.status.seccomp !== 0) {
    out.push({
      code: 'UNSUPPORTED_TASK',
      pid,
      what: 'seccomp',
      message: `process ${pid} (${f.comm}): seccomp ${f.status.seccomp === 1 ? 'strict mode' : 'filters'} cannot be restored`,
    });
  }
  return out;
}

function sameCreds(a: ProcStatus, b: ProcStatus): boolean {
  const ids = (s: ProcStatus) => [s.uid, s.gid].map((i) => `${i.real},${i.effective},${i.saved},${i.fs}`).join(';');
  const caps = (s: ProcStatus) => [s.capInh, s.capPrm, s.capEff, s.capBnd, s.capAmb].join(',');
  return ids(a) === ids(b) && caps(a) === caps(b) && a.groups.join(',') === b.groups.join(',');
}

/** A thread whose credentials differ from its leader's (set with raw setresuid & co.) cannot be restored. */
export function checkThreadCreds(f: ProcessFacts, tids: number[]): Problem[] {
  const out: Problem[] = [];
  for (const tid of tids) {
    if (tid === f.pid) continue;
    if (!sameCreds(f.status, readStatus(f.pid, tid))) {
      out.push({
        code: 'UNSUPPORTED_TASK',
        pid: f.pid,
        what: `tid ${tid}`,
        message: `process ${f.pid}: thread ${tid} has credentials of its own, which restore cannot give it`,
      });
    }
  }
  return out;
}

export function credsOf(s: ProcStatus): CredsRecord {
  return {
    uid: [s.uid.real, s.uid.effective, s.uid.saved, s.uid.fs],
    gid: [s.gid.real, s.gid.effective, s.gid.saved, s.gid.fs],
    groups: s.groups,
    caps: {
      inh: hex64(s.capInh),
      prm: hex64(s.capPrm),
      eff: hex64(s.capEff),
      bnd: hex64(s.capBnd),
      amb: hex64(s.capAmb),
    },
    noNewPrivs: s.noNewPrivs,
  };
}

export function rlimitsOf(pid: number): RlimitRecord[] {
  return Object.values(readLimits(pid)).map((l) => ({
    resource: l.resource,
    soft: l.soft.toString(),
    hard: l.hard.toString(),
  }));
}

export function mmOf(pid: number, stat: ProcStat, brk: number): MmRecord {
  return {
    startCode: stat.startCode,
    endCode: stat.endCode,
    startData: stat.startData,
    endData: stat.endData,
    startBrk: stat.startBrk,
    brk,
    startStack: stat.startStack,
    argStart: stat.argStart,
    argEnd: stat.argEnd,
    envStart: stat.envStart,
    envEnd: stat.envEnd,
    auxv: base64(readAuxv(pid).raw),
  };
}

export function exeOf(pid: number, links: ProcLinks): ProcessRecord['exe'] {
  if (links.exe === null) throw new Error(`process ${pid} has no executable`);
  const st = statSync(`/proc/${pid}/exe`, { bigint: true });
  return { path: links.exe, dev: Number(st.dev), ino: Number(st.ino) };
}

/** The process record, from the /proc facts and what the injected syscalls and the other collectors found. */
export function processRecord(
  f: ProcessFacts,
  parts: Pick<ProcessRecord, 'pdeathsig' | 'sigactions' | 'sharedPending' | 'vmas' | 'fds'> & { brk: number },
): ProcessRecord {
  const umask = f.status.umask;
  if (umask === null) throw new Error(`process ${f.pid} has no umask (exited)`);
  return {
    pid: f.pid,
    comm: f.comm,
    exe: exeOf(f.pid, f.links),
    cwd: f.links.cwd,
    root: f.links.root,
    umask,
    personality: readPersonality(f.pid),
    pdeathsig: parts.pdeathsig,
    mm: mmOf(f.pid, f.stat, parts.brk),
    creds: credsOf(f.status),
    rlimits: rlimitsOf(f.pid),
    sigactions: parts.sigactions,
    sharedPending: parts.sharedPending,
    vmas: parts.vmas,
    fds: parts.fds,
  };
}
