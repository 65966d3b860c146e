/**
 * /proc/<pid>/stat and /proc/<pid>/task/<tid>/stat (proc(5),
 * Documentation/filesystems/proc.rst table 1-4, fs/proc/array.c do_task_stat).
 *
 * One line: "pid (comm) state ppid ...", 52 fields on Linux 3.5 and later.
 * comm is printed raw (up to 15 bytes) and may contain spaces and parentheses,
 * so it ends at the LAST ')' of the line. Field numbers below are proc(5)'s
 * (1-based). A line with another field count is an error.
 */
import {
  fail,
  parseDec,
  parseDecBig,
  parseSignedDec,
  procPath,
  readProcBuffer,
  decodeText,
  type Origin,
} from './read.js';

/** PF_KTHREAD in the flags field (include/linux/sched.h). */
export const PF_KTHREAD = 0x00200000;
const FIELD_COUNT = 52;

export interface ProcStat {
  /** (1) */ pid: number;
  /** (2) without the parentheses. */ comm: string;
  /** (3) one letter: R S D Z T t X I P ... */ state: string;
  /** (4) */ ppid: number;
  /** (5) */ pgrp: number;
  /** (6) */ session: number;
  /** (7) controlling terminal, encoded device number (0 = none). */ ttyNr: number;
  /** (8) foreground process group of the terminal, -1 if none. */ tpgid: number;
  /** (9) PF_* flags. */ flags: number;
  /** flags & PF_KTHREAD. */ kernelThread: boolean;
  /** (10) */ minflt: number;
  /** (12) */ majflt: number;
  /** (14) clock ticks */ utime: number;
  /** (15) clock ticks */ stime: number;
  /** (18) */ priority: number;
  /** (19) */ nice: number;
  /** (20) */ numThreads: number;
  /** (22) clock ticks after boot */ starttime: number;
  /** (23) bytes */ vsize: number;
  /** (24) pages */ rss: number;
  /** (25) bytes; 2^64-1 = unlimited */ rsslim: bigint;
  /** (26) */ startCode: number;
  /** (27) */ endCode: number;
  /** (28) */ startStack: number;
  /** (38) signal sent to the parent when this task dies */ exitSignal: number;
  /** (39) CPU last run on */ processor: number;
  /** (40) */ rtPriority: number;
  /** (41) SCHED_* policy */ policy: number;
  /** (45) */ startData: number;
  /** (46) */ endData: number;
  /** (47) */ startBrk: number;
  /** (48) */ argStart: number;
  /** (49) */ argEnd: number;
  /** (50) */ envStart: number;
  /** (51) */ envEnd: number;
  /** (52) exit status as waitpid(2) reports it */ exitCode: number;
}

export function parseStat(text: string, file: string): ProcStat {
  const line = text.endsWith('\n') ? text.slice(0, -1) : text;
  const o: Origin = { file, line: 1, text: line };
  if (line.includes('\n') && line.lastIndexOf('\n') > line.lastIndexOf(')')) fail(o, 'more than one line');
  const open = line.indexOf(' (');
  const close = line.lastIndexOf(')');
  if (open <= 0 || close < open) fail(o, 'no "(comm)" field');
  if (line.charAt(close + 1) !== ' ') fail(o, 'no space after the command name');
  const rest = line.slice(close + 2).split(' ');
  if (rest.length !== FIELD_COUNT - 2) fail(o, `${rest.length + 2} fields, expected ${FIELD_COUNT}`);
  // f(n) is proc(5) field n (n >= 3).
  const f = (n: number): string => rest[n - 3]!;
  const u = (n: number, what: string): number => parseDec(f(n), o, what);
  const s = (n: number, what: string): number => parseSignedDec(f(n), o, what);
  const state = f(3);
  if (!/^[A-Za-z]$/.test(state)) fail(o, 'state is not one letter');
  const flags = u(9, 'flags');
  return {
    pid: parseDec(line.slice(0, open), o, 'pid'),
    comm: line.slice(open + 2, close),
    state,
    ppid: u(4, 'ppid'),
    pgrp: s(5, 'pgrp'),
    session: s(6, 'session'),
    ttyNr: s(7, 'tty_nr'),
    tpgid: s(8, 'tpgid'),
    flags,
    kernelThread: (flags & PF_KTHREAD) !== 0,
    minflt: u(10, 'minflt'),
    majflt: u(12, 'majflt'),
    utime: u(14, 'utime'),
    stime: u(15, 'stime'),
    priority: s(18, 'priority'),
    nice: s(19, 'nice'),
    numThreads: u(20, 'num_threads'),
    starttime: u(22, 'starttime'),
    vsize: u(23, 'vsize'),
    rss: s(24, 'rss'),
    rsslim: parseDecBig(f(25), o, 'rsslim'),
    startCode: u(26, 'startcode'),
    endCode: u(27, 'endcode'),
    startStack: u(28, 'startstack'),
    exitSignal: s(38, 'exit_signal'),
    processor: u(39, 'processor'),
    rtPriority: u(40, 'rt_priority'),
    policy: u(41, 'policy'),
    startData: u(45, 'start_data'),
    endData: u(46, 'end_data'),
    startBrk: u(47, 'start_brk'),
    argStart: u(48, 'arg_start'),
    argEnd: u(49, 'arg_end'),
    envStart: u(50, 'env_start'),
    envEnd: u(51, 'env_end'),
    exitCode: s(52, 'exit_code'),
  };
}

/** The stat line of a process, or of one of its threads. ESRCH when it does not exist. */
export function readStat(pid: number, tid?: number): ProcStat {
  const file = procPath(pid, 'stat', tid);
  return parseStat(decodeText(readProcBuffer(pid, 'stat', tid), file), file);
}
