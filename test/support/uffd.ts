/**
 * Helpers for the userfaultfd and page-service tests: the page pattern of
 * test/programs/common.h in TypeScript, and a uffd_target program whose
 * userfaultfd the test has taken over.
 */
import { randomBytes } from 'node:crypto';
import { native, UFFD_FEATURES, UFFDIO_REGISTER_MODE_MISSING, type PageServiceEvent } from '../../native/index.js';
import { Program } from './programs.js';

export const PAGE = 4096;

// lr_pattern_word works on 64-bit words; JS does it on two 32-bit halves
// (BigInt would make filling a few MiB take seconds).
const C0 = [0x9e3779b9, 0x7f4a7c15] as const;
const K1 = [0xbf58476d, 0x1ce4e5b9] as const;
const K2 = [0x94d049bb, 0x133111eb] as const;

let rh = 0;
let rl = 0;

/** (ah:al) * (bh:bl) mod 2^64 into rh:rl. */
function mul64(ah: number, al: number, bh: number, bl: number): void {
  const a0 = al & 0xffff;
  const a1 = al >>> 16;
  const b0 = bl & 0xffff;
  const b1 = bl >>> 16;
  const p00 = a0 * b0;
  const p01 = a0 * b1;
  const p10 = a1 * b0;
  const p11 = a1 * b1;
  const mid = (p00 >>> 16) + (p01 & 0xffff) + (p10 & 0xffff);
  rl = (((mid & 0xffff) << 16) | (p00 & 0xffff)) >>> 0;
  const high = p11 + (p01 >>> 16) + (p10 >>> 16) + Math.floor(mid / 65536);
  rh = (high + Math.imul(al, bh) + Math.imul(ah, bl)) >>> 0;
}

/** lr_pattern_word(seed, addr, 0) as [high, low] 32-bit halves. */
function patternHalves(seedHi: number, seedLo: number, addr: number): void {
  let h = (seedHi ^ Math.floor(addr / 0x100000000) ^ C0[0]) >>> 0;
  let l = (seedLo ^ (addr >>> 0) ^ C0[1]) >>> 0;
  // x ^= x >> 31
  l = (l ^ ((l >>> 31) | (h << 1))) >>> 0;
  h = (h ^ (h >>> 31)) >>> 0;
  mul64(h, l, K1[0], K1[1]);
  h = rh;
  l = rl;
  // x ^= x >> 27
  l = (l ^ ((l >>> 27) | (h << 5))) >>> 0;
  h = (h ^ (h >>> 27)) >>> 0;
  mul64(h, l, K2[0], K2[1]);
  h = rh;
  l = rl;
  // x ^ (x >> 31)
  rl = (l ^ ((l >>> 31) | (h << 1))) >>> 0;
  rh = (h ^ (h >>> 31)) >>> 0;
}

/** The pattern word at absolute address `addr` (BigInt reference, slow). */
export function patternWordBig(seed: bigint, addr: number): bigint {
  const m = (1n << 64n) - 1n;
  let x = seed ^ BigInt(addr) ^ 0x9e3779b97f4a7c15n;
  x ^= x >> 31n;
  x = (x * 0xbf58476d1ce4e5b9n) & m;
  x ^= x >> 27n;
  x = (x * 0x94d049bb133111ebn) & m;
  return x ^ (x >> 31n);
}

/** The pattern word at `addr`, computed the fast way. */
export function patternWord(seed: bigint, addr: number): bigint {
  patternHalves(Number(seed >> 32n), Number(seed & 0xffffffffn), addr);
  return (BigInt(rh) << 32n) | BigInt(rl);
}

/** The bytes the pages at [addr, addr+len) hold under `seed` (as lr_fill). */
export function patternPages(seed: bigint, addr: number, len: number): Buffer {
  const words = new Uint32Array(len / 4);
  const sh = Number(seed >> 32n);
  const sl = Number(seed & 0xffffffffn);
  for (let i = 0; i < len / 8; i++) {
    patternHalves(sh, sl, addr + i * 8);
    words[2 * i] = rl; // little-endian
    words[2 * i + 1] = rh;
  }
  return Buffer.from(words.buffer);
}

export function randomSeed(): bigint {
  return randomBytes(8).readBigUInt64LE();
}

export const EVENT_FEATURES =
  UFFD_FEATURES.UFFD_FEATURE_EVENT_FORK |
  UFFD_FEATURES.UFFD_FEATURE_EVENT_REMAP |
  UFFD_FEATURES.UFFD_FEATURE_EVENT_REMOVE |
  UFFD_FEATURES.UFFD_FEATURE_EVENT_UNMAP;

/** A running uffd_target whose userfaultfd this process holds in `uffd`. */
export interface Target {
  prog: Program;
  uffd: number;
  addr: number;
  len: number;
}

/** Starts uffd_target, takes its uffd with pidfd_getfd and makes it close its own. */
export async function startTarget(mib: number): Promise<Target> {
  const prog = new Program('uffd_target', [String(mib)]);
  try {
    const [, fdText, addrText, lenText] = (await prog.waitFor('READY')).split(' ');
    const pidfd = native.pidfdOpen(prog.pid, 0);
    let uffd: number;
    try {
      uffd = native.pidfdGetfd(pidfd, Number(fdText));
    } finally {
      native.closeFd(pidfd);
    }
    prog.send('closeuffd');
    await prog.waitFor('CLOSED');
    return { prog, uffd, addr: Number(addrText), len: Number(lenText) };
  } catch (e) {
    prog.kill();
    throw e;
  }
}

/** Negotiates the non-cooperative events and registers the whole region. */
export function negotiate(t: Target, features = EVENT_FEATURES): void {
  native.uffdApi(t.uffd, features);
  native.uffdRegister(t.uffd, t.addr, t.len, UFFDIO_REGISTER_MODE_MISSING);
}

/** Sends a command and returns the program's answer line. */
export async function ask(prog: Program, command: string, prefix = ''): Promise<string> {
  prog.send(command);
  return prog.waitFor(prefix);
}

/** Collects page-service events and waits for the ones a test expects. */
export class EventLog {
  readonly events: PageServiceEvent[] = [];
  #waiters: Array<() => void> = [];

  push = (events: PageServiceEvent[]): void => {
    this.events.push(...events);
    for (const w of this.#waiters.splice(0)) w();
  };

  async waitFor<T extends PageServiceEvent>(
    pred: (e: PageServiceEvent) => e is T,
    what: string,
    timeoutMs = 10_000,
  ): Promise<T> {
    return (await this.waitForCount(pred, 1, what, timeoutMs))[0]!;
  }

  /** Waits until `count` events match, and returns all that match. */
  async waitForCount<T extends PageServiceEvent>(
    pred: (e: PageServiceEvent) => e is T,
    count: number,
    what: string,
    timeoutMs = 10_000,
  ): Promise<T[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events.filter(pred);
      if (found.length >= count) return found;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; events: ${JSON.stringify(this.events)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}

/** A type guard for one event type (and optionally one task). */
export function isEvent<K extends PageServiceEvent['type']>(
  type: K,
  task?: number,
): (e: PageServiceEvent) => e is Extract<PageServiceEvent, { type: K }> {
  return (e): e is Extract<PageServiceEvent, { type: K }> => e.type === type && (task === undefined || e.task === task);
}
