/**
 * /proc/<pid>/status and /proc/<pid>/task/<tid>/status (proc(5),
 * Documentation/filesystems/proc.rst, fs/proc/array.c).
 *
 * Lines are "Key:\tvalue". The fields a dump relies on are parsed and must be
 * present; fields known to be informational (memory counters, CPU affinity,
 * context switches, ...) are kept as raw text in `other`; any other key is an
 * error, so a new kernel field is noticed rather than silently dropped.
 * Signal masks bit N stand for signal N + 1; capability masks bit N for
 * capability N.
 */
import { fail, parseDec, parseHexBig, parseOct, procPath, readProcText, splitLines, type Origin } from './read.js';

export interface IdSet {
  real: number;
  effective: number;
  saved: number;
  fs: number;
}

export interface ProcStatus {
  name: string;
  /** null for a zombie (it has no fs_struct any more). */
  umask: number | null;
  /** One letter: R, S, D, T, t, X, Z, P, I. */
  state: string;
  /** The description in parentheses, e.g. 'sleeping'. */
  stateName: string;
  tgid: number;
  pid: number;
  ppid: number;
  tracerPid: number;
  uid: IdSet;
  gid: IdSet;
  groups: number[];
  /** Ids in each pid namespace, outermost first; more than one value = nested pid namespace. */
  nsTgid: number[];
  nsPid: number[];
  nsPgid: number[];
  nsSid: number[];
  /** The Kthread line (recent kernels); null when the kernel does not print it. */
  kthread: boolean | null;
  threads: number;
  sigQ: { queued: number; limit: number };
  sigPnd: bigint;
  shdPnd: bigint;
  sigBlk: bigint;
  sigIgn: bigint;
  sigCgt: bigint;
  capInh: bigint;
  capPrm: bigint;
  capEff: bigint;
  capBnd: bigint;
  capAmb: bigint;
  noNewPrivs: boolean;
  /** 0 disabled, 1 strict, 2 filter. */
  seccomp: number;
  seccompFilters: number;
  speculationStoreBypass: string;
  /** Known informational fields, raw. */
  other: Record<string, string>;
}

/** Fields kept raw: informational for a dump (counters, placement, mitigations). */
const INFORMATIONAL = new Set([
  'Ngid',
  'FDSize',
  'VmPeak',
  'VmSize',
  'VmLck',
  'VmPin',
  'VmHWM',
  'VmRSS',
  'RssAnon',
  'RssFile',
  'RssShmem',
  'VmData',
  'VmStk',
  'VmExe',
  'VmLib',
  'VmPTE',
  'VmSwap',
  'HugetlbPages',
  'CoreDumping',
  'THP_enabled',
  'untag_mask',
  'SpeculationIndirectBranch',
  'Cpus_allowed',
  'Cpus_allowed_list',
  'Mems_allowed',
  'Mems_allowed_list',
  'voluntary_ctxt_switches',
  'nonvoluntary_ctxt_switches',
  'x86_Thread_features',
  'x86_Thread_features_locked',
]);

type Fields = Map<string, { value: string; o: Origin }>;

function collect(text: string, file: string): Fields {
  const fields: Fields = new Map();
  const lines = splitLines(text);
  for (let i = 0; i < lines.length; i++) {
    const o: Origin = { file, line: i + 1, text: lines[i]! };
    const colon = o.text.indexOf(':');
    if (colon <= 0) fail(o, 'not a "Key: value" line');
    const key = o.text.slice(0, colon);
    if (fields.has(key)) fail(o, `${key} appears twice`);
    fields.set(key, { value: o.text.slice(colon + 1).trim(), o });
  }
  return fields;
}

class Reader {
  constructor(
    private readonly fields: Fields,
    private readonly file: string,
  ) {}

  get(key: string): { value: string; o: Origin } {
    const f = this.fields.get(key);
    if (!f) fail({ file: this.file, line: 0, text: '' }, `no ${key} line`);
    return f;
  }

  str(key: string): string {
    return this.get(key).value;
  }

  dec(key: string): number {
    const f = this.get(key);
    return parseDec(f.value, f.o, key);
  }

  list(key: string): number[] {
    const f = this.get(key);
    return f.value === '' ? [] : f.value.split(/\s+/).map((v) => parseDec(v, f.o, key));
  }

  mask(key: string): bigint {
    const f = this.get(key);
    if (f.value.length !== 16) fail(f.o, `${key} is not 16 hex digits`);
    return parseHexBig(f.value, f.o, key);
  }

  bool(key: string): boolean {
    const f = this.get(key);
    if (f.value !== '0' && f.value !== '1') fail(f.o, `${key} is not 0 or 1`);
    return f.value === '1';
  }

  ids(key: string): IdSet {
    const v = this.list(key);
    if (v.length !== 4) fail(this.get(key).o, `${key} does not have 4 ids`);
    return { real: v[0]!, effective: v[1]!, saved: v[2]!, fs: v[3]! };
  }
}

// prettier-ignore
const TYPED = new Set([
  'Name', 'Umask', 'State', 'Tgid', 'Pid', 'PPid', 'TracerPid', 'Uid', 'Gid', 'Groups', 'NStgid', 'NSpid', 'NSpgid',
  'NSsid', 'Kthread', 'Threads', 'SigQ', 'SigPnd', 'ShdPnd', 'SigBlk', 'SigIgn', 'SigCgt', 'CapInh', 'CapPrm', 'CapEff',
  'CapBnd', 'CapAmb', 'NoNewPrivs', 'Seccomp', 'Seccomp_filters', 'Speculation_Store_Bypass',
]);

export function parseStatus(text: string, file: string): ProcStatus {
  const fields = collect(text, file);
  const other: Record<string, string> = {};
  for (const [key, f] of fields) {
    if (INFORMATIONAL.has(key)) other[key] = f.value;
    else if (!TYPED.has(key)) fail(f.o, `unknown status field "${key}"`);
  }
  const r = new Reader(fields, file);
  const state = r.get('State');
  const sm = /^(\S) \((.+)\)$/.exec(state.value);
  if (!sm) fail(state.o, 'State is not "<letter> (<name>)"');
  const sigq = r.get('SigQ');
  const qm = /^(\d+)\/(\d+)$/.exec(sigq.value);
  if (!qm) fail(sigq.o, 'SigQ is not "<queued>/<limit>"');
  const umask = fields.get('Umask');
  return {
    // As printed: the kernel escapes whitespace and backslashes here; /proc/<pid>/comm has the raw bytes.
    name: r.str('Name'),
    umask: umask ? parseOct(umask.value, umask.o, 'Umask') : null,
    state: sm[1]!,
    stateName: sm[2]!,
    tgid: r.dec('Tgid'),
    pid: r.dec('Pid'),
    ppid: r.dec('PPid'),
    tracerPid: r.dec('TracerPid'),
    uid: r.ids('Uid'),
    gid: r.ids('Gid'),
    groups: r.list('Groups'),
    nsTgid: r.list('NStgid'),
    nsPid: r.list('NSpid'),
    nsPgid: r.list('NSpgid'),
    nsSid: r.list('NSsid'),
    kthread: fields.has('Kthread') ? r.bool('Kthread') : null,
    threads: r.dec('Threads'),
    sigQ: { queued: parseDec(qm[1]!, sigq.o, 'SigQ'), limit: parseDec(qm[2]!, sigq.o, 'SigQ') },
    sigPnd: r.mask('SigPnd'),
    shdPnd: r.mask('ShdPnd'),
    sigBlk: r.mask('SigBlk'),
    sigIgn: r.mask('SigIgn'),
    sigCgt: r.mask('SigCgt'),
    capInh: r.mask('CapInh'),
    capPrm: r.mask('CapPrm'),
    capEff: r.mask('CapEff'),
    capBnd: r.mask('CapBnd'),
    capAmb: r.mask('CapAmb'),
    noNewPrivs: r.bool('NoNewPrivs'),
    seccomp: r.dec('Seccomp'),
    seccompFilters: r.dec('Seccomp_filters'),
    speculationStoreBypass: r.str('Speculation_Store_Bypass'),
    other,
  };
}

/** The status of a process, or of one of its threads. ESRCH when it does not exist. */
export function readStatus(pid: number, tid?: number): ProcStatus {
  return parseStatus(readProcText(pid, 'status', tid), procPath(pid, 'status', tid));
}

/** Bit mask of a signal number in SigBlk/SigIgn/SigCgt/SigPnd. */
export function sigmask(...signals: number[]): bigint {
  let m = 0n;
  for (const s of signals) {
    if (!Number.isInteger(s) || s < 1 || s > 64) throw new RangeError(`not a signal number: ${s}`);
    m |= 1n << BigInt(s - 1);
  }
  return m;
}

/** The signal numbers set in a mask. */
export function signalsOf(mask: bigint): number[] {
  const out: number[] = [];
  for (let s = 1; s <= 64; s++) if (mask & (1n << BigInt(s - 1))) out.push(s);
  return out;
}
