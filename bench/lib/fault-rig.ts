/**
 * The apparatus of the fault-service scenarios: one C workload
 * (bench/reference/fault_target.c) served either by the C floor monitor
 * (bench/reference/uffd_floor.c) or by our page service (daemon/page-service.ts)
 * from a PageSource holding the very bytes the floor serves. Same program,
 * same pages in the same order; only the monitor differs.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { PageService, PageSource } from '../../daemon/page-service.js';
import { native, UFFD_FEATURES, UFFDIO_REGISTER_MODE_MISSING, type PageServiceEvent } from '../../native/index.js';
import { LineProcess } from './process.js';

export const PAGE = 4096;
export const MiB = 1 << 20;
/** The dump-time address of region offset 0 (BENCH_ORIGIN in bench_common.h). */
export const BENCH_ORIGIN = 0x1_0000_0000;
/** What both monitors negotiate: the events a restored process needs followed. */
export const FEATURES =
  UFFD_FEATURES.UFFD_FEATURE_EVENT_FORK |
  UFFD_FEATURES.UFFD_FEATURE_EVENT_REMAP |
  UFFD_FEATURES.UFFD_FEATURE_EVENT_REMOVE |
  UFFD_FEATURES.UFFD_FEATURE_EVENT_UNMAP;
export const FLOOR_NAME = 'C floor: poll+read+UFFDIO_COPY in another process';

export type Side = 'floor' | 'ours';

export interface ReferenceBinaries {
  faultTarget: string;
  uffdFloor: string;
  /** The dump and restore workload (restore_workload.c). */
  restoreWorkload: string;
}

/** A random seed for the C programs (strtoull parses the decimal text). */
export function newSeed(): string {
  return (randomBytes(8).readBigUInt64LE() >> 1n).toString();
}

/** The order in which the two sides run: floor, ours, then ours, floor, ...
 *  (ABBA), so drifting machine load and first-touch effects of the VM's
 *  memory fall on both alike. Each entry carries its round number. */
export function abba(rounds: number): Array<{ side: Side; round: number }> {
  const out: Array<{ side: Side; round: number }> = [];
  for (let r = 0; r < rounds; r++) {
    const pair: Side[] = r % 2 === 0 ? ['floor', 'ours'] : ['ours', 'floor'];
    for (const side of pair) out.push({ side, round: r });
  }
  return out;
}

function parseSamples(line: string, what: string): number[] {
  const parts = line.split(' ');
  const n = Number(parts[1]);
  const samples = parts.slice(2).map(Number);
  if (samples.length !== n || samples.some((v) => !Number.isFinite(v))) {
    throw new Error(`${what}: malformed SAMPLES line (${samples.length} of ${n} values)`);
  }
  return samples;
}

/** Memory to warm for a session touching `pages` pages of a `mib` MiB
 *  region: the pages, plus room for page tables and the monitor's own needs. */
function warmMiB(mib: number, pages: number): number {
  return Math.min(mib, Math.ceil((pages * PAGE) / MiB) + 16);
}

/** A running fault_target. */
export class FaultTarget {
  private constructor(
    readonly proc: LineProcess,
    /** The target's own fd number of its uffd (for pidfd_getfd). */
    readonly uffdNumber: number,
    readonly addr: number,
    readonly len: number,
  ) {}

  /** `plain`: no uffd, no monitor (see fault_target.c). */
  static async start(bin: string, mib: number, plain = false): Promise<FaultTarget> {
    const proc = new LineProcess(bin, plain ? [String(mib), 'plain'] : [String(mib)]);
    try {
      const [, fd, addr, len] = (await proc.waitFor('READY', 20_000)).split(' ');
      return new FaultTarget(proc, Number(fd), Number(addr), Number(len));
    } catch (e) {
      await proc.kill();
      throw e;
    }
  }

  get pages(): number {
    return this.len / PAGE;
  }

  async closeUffd(): Promise<void> {
    await this.proc.ask('closeuffd', 'CLOSED');
  }

  /** First-touch latency (ns) of `count` pages in the order `order` seeds. */
  async lat(seed: string, order: string, count: number): Promise<number[]> {
    this.proc.send(`lat ${seed} ${order} ${count}`);
    const samples = parseSamples(await this.proc.waitFor('SAMPLES', 600_000), 'lat');
    const verdict = await this.proc.waitFor('LAT');
    if (verdict !== 'LAT OK') throw new Error(`fault_target: wrong page data after lat: ${verdict}`);
    return samples;
  }

  async threads(
    seed: string,
    order: string,
    threads: number,
    each: number,
  ): Promise<{ faults: number; wallNs: number; samples: number[] }> {
    this.proc.send(`threads ${seed} ${order} ${threads} ${each}`);
    const samples = parseSamples(await this.proc.waitFor('SAMPLES', 600_000), 'threads');
    const [, faults, wall, verdict] = (await this.proc.waitFor('THREADS')).split(' ');
    if (verdict !== 'OK') throw new Error('fault_target: wrong page data after threads');
    return { faults: Number(faults), wallNs: Number(wall), samples };
  }

  /** Durations (ns) of each fork() in the parent. */
  async forkstorm(seed: string, order: string, forks: number, prefault: number): Promise<number[]> {
    this.proc.send(`forkstorm ${seed} ${order} ${forks} ${prefault}`);
    const samples = parseSamples(await this.proc.waitFor('SAMPLES', 600_000), 'forkstorm');
    const [, , bad] = (await this.proc.waitFor('FORKS')).split(' ');
    if (bad !== '0') throw new Error(`fault_target: ${bad} forked children (or the parent) saw wrong page data`);
    return samples;
  }

  /** Verifies every page of the region. */
  async check(seed: string): Promise<void> {
    const answer = await this.proc.ask(`check ${seed}`, '', 600_000);
    if (answer !== 'OK') throw new Error(`fault_target: wrong page data: ${answer}`);
  }
}

/** Whatever serves a target's faults. */
export interface Monitor {
  readonly side: Side;
  /** Copies every still-missing page of the region, `chunkBytes` per
   *  UFFDIO_COPY; resolves with the bytes copied and the time it took. */
  background(chunkBytes: number): Promise<{ bytes: number; ns: number }>;
  /** Throws if the monitor reported a failure while serving. */
  assertHealthy(): void;
  close(): Promise<void>;
}

/** A long-lived uffd_floor process holding the image of one region size;
 *  it serves one target at a time (attach ... detach). */
class FloorServer {
  private constructor(readonly proc: LineProcess) {}

  static async start(bin: string, len: number, seed: string): Promise<FloorServer> {
    const proc = new LineProcess(bin, ['serve', String(len), seed]);
    try {
      await proc.waitFor('READY', 300_000);
      return new FloorServer(proc);
    } catch (e) {
      await proc.kill();
      throw e;
    }
  }

  async attach(target: FaultTarget): Promise<FloorMonitor> {
    await this.proc.ask(`attach ${target.proc.pid} ${target.uffdNumber} ${target.addr}`, 'ATTACHED');
    return new FloorMonitor(this.proc);
  }

  async quit(): Promise<void> {
    if (!this.proc.exited) this.proc.send('quit');
    await this.proc.kill();
  }
}

class FloorMonitor implements Monitor {
  readonly side = 'floor';
  constructor(private readonly proc: LineProcess) {}

  async background(chunkBytes: number): Promise<{ bytes: number; ns: number }> {
    const [, bytes, ns] = (await this.proc.ask(`bg ${chunkBytes}`, 'BG', 600_000)).split(' ');
    return { bytes: Number(bytes), ns: Number(ns) };
  }

  assertHealthy(): void {
    // The floor exits (with its reason on stderr) on any failure.
    if (this.proc.exited) throw new Error(`${this.proc.name}: exited while serving: ${this.proc.stderr.trim()}`);
  }

  async close(): Promise<void> {
    if (!this.proc.exited) await this.proc.ask('detach', 'DETACHED');
  }
}

class OurMonitor implements Monitor {
  readonly side = 'ours';
  readonly #problems: PageServiceEvent[] = [];

  private constructor(
    private readonly service: PageService,
    private readonly task: number,
    private readonly len: number,
    target: FaultTarget,
  ) {
    // Every page is in the source, so a 'need' would mean a lookup bug and
    // the target would wait for ever: stop it so the run fails at once.
    const problem = (e: PageServiceEvent) => {
      this.#problems.push(e);
      void target.proc.kill();
    };
    service.on('need', problem);
    service.on('taskError', problem);
  }

  /** Takes the target's uffd, negotiates and registers as the daemon will,
   *  and hands it to a fresh page service serving from `source`. */
  static attach(target: FaultTarget, source: PageSource): OurMonitor {
    const pidfd = native.pidfdOpen(target.proc.pid, 0);
    let uffd: number;
    try {
      uffd = native.pidfdGetfd(pidfd, target.uffdNumber);
    } finally {
      native.closeFd(pidfd);
    }
    let service: PageService | undefined;
    let task: number | undefined;
    try {
      native.uffdApi(uffd, FEATURES);
      native.uffdRegister(uffd, target.addr, target.len, UFFDIO_REGISTER_MODE_MISSING);
      service = new PageService();
      task = service.addTask(uffd, source);
      service.addLazyRange(task, target.addr, target.len, BENCH_ORIGIN);
      return new OurMonitor(service, task, target.len, target);
    } catch (e) {
      // Until addTask succeeded the uffd is ours to close; after, the service's.
      if (task === undefined) native.closeFd(uffd);
      if (service) service.close({ closeUffds: true }).catch(() => {});
      throw e;
    }
  }

  async background(chunkBytes: number): Promise<{ bytes: number; ns: number }> {
    const done = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('background copy did not complete in 10 minutes')), 600_000);
      const onEvent = (e: PageServiceEvent) => {
        if (e.task !== this.task) return;
        if (e.type === 'complete' || e.type === 'exit' || e.type === 'error') {
          clearTimeout(timer);
          this.service.off('event', onEvent);
          if (e.type === 'complete') resolve();
          else reject(new Error(`page service: ${JSON.stringify(e)} during background copy`));
        }
      };
      this.service.on('event', onEvent);
    });
    const t0 = process.hrtime.bigint();
    this.service.setBackground(this.task, true, chunkBytes);
    await done;
    // The target was idle and untouched, so every page was lazy before.
    return { bytes: this.len, ns: Number(process.hrtime.bigint() - t0) };
  }

  assertHealthy(): void {
    if (this.#problems.length > 0) throw new Error(`page service: ${JSON.stringify(this.#problems.slice(0, 3))}`);
  }

  async close(): Promise<void> {
    if (!this.service.closed) await this.service.close({ closeUffds: true });
  }
}

/** Shared by the fault scenarios of one run: the binaries, the image seed,
 *  and per region size our PageSource and the floor's server, each filled
 *  once and reused by every target (the two sides alike). */
export class FaultRig {
  readonly seed = newSeed();
  readonly #sources = new Map<number, Promise<PageSource>>();
  readonly #floors = new Map<number, Promise<FloorServer>>();

  constructor(readonly bins: ReferenceBinaries) {}

  /** Our PageSource holding the image of a `len`-byte region. */
  source(len: number): Promise<PageSource> {
    let p = this.#sources.get(len);
    if (!p) {
      p = this.#fill(len);
      this.#sources.set(len, p);
      p.catch(() => this.#sources.delete(len));
    }
    return p;
  }

  /** The floor's server for a `len`-byte region (restarted if it died). */
  async #floor(len: number): Promise<FloorServer> {
    const cached = this.#floors.get(len);
    if (cached) {
      const server = await cached.catch(() => null);
      if (server && !server.proc.exited) return server;
    }
    const p = FloorServer.start(this.bins.uffdFloor, len, this.seed);
    this.#floors.set(len, p);
    return p;
  }

  /** Stops the floor servers. */
  async close(): Promise<void> {
    const servers = await Promise.all([...this.#floors.values()].map((p) => p.catch(() => null)));
    this.#floors.clear();
    await Promise.all(servers.map((s) => (s ? s.quit() : Promise.resolve())));
  }

  /** Starts a target of `mib` MiB served by `side`, runs `fn`, and always
   *  kills the target and stops the monitor afterwards. `touchPages` is how
   *  many pages `fn` will bring in: that much memory is warmed first. */
  async session<T>(
    side: Side,
    mib: number,
    touchPages: number,
    fn: (target: FaultTarget, monitor: Monitor) => Promise<T>,
  ): Promise<T> {
    // Both images exist before the target does, so filling them is never timed.
    const source = side === 'ours' ? await this.source(mib * MiB) : null;
    const floor = side === 'floor' ? await this.#floor(mib * MiB) : null;
    await this.warm(warmMiB(mib, touchPages));
    const target = await FaultTarget.start(this.bins.faultTarget, mib);
    let monitor: Monitor | undefined;
    try {
      monitor = source ? OurMonitor.attach(target, source) : await floor!.attach(target);
      // From here on only the monitor holds the uffd: when it lets go, the
      // ranges unregister instead of waiting for a monitor that is gone.
      await target.closeUffd();
      let result: T;
      try {
        result = await fn(target, monitor);
      } catch (e) {
        // A monitor failure shows in the target only as a symptom (wrong
        // data, an exit): report the cause.
        monitor.assertHealthy();
        throw e;
      }
      monitor.assertHealthy();
      return result;
    } finally {
      await target.proc.kill();
      if (monitor) await monitor.close();
    }
  }

  /** Touches and frees `mib` MiB right before a measured target starts, so
   *  the target's pages come from memory the VM's host still backs, whichever
   *  side runs and whatever ran before (see `warm` in fault_target.c). */
  async warm(mib: number): Promise<void> {
    const proc = new LineProcess(this.bins.faultTarget, [String(mib), 'warm']);
    try {
      await proc.waitFor('WARMED', 120_000);
    } finally {
      await proc.kill();
    }
  }

  /** A target with no uffd and no monitor: the kernel-only baseline. */
  async plainSession<T>(mib: number, touchPages: number, fn: (target: FaultTarget) => Promise<T>): Promise<T> {
    await this.warm(warmMiB(mib, touchPages));
    const target = await FaultTarget.start(this.bins.faultTarget, mib, true);
    try {
      return await fn(target);
    } finally {
      await target.proc.kill();
    }
  }

  /** The floor's image, produced by the floor binary itself (`pattern`), in
   *  large pieces: background copies never cross a piece of the source. */
  async #fill(len: number): Promise<PageSource> {
    const source = new PageSource();
    const piece = Math.min(len, 64 * MiB);
    const buf = Buffer.allocUnsafe(piece);
    let used = 0;
    let origin = BENCH_ORIGIN;
    const proc = spawn(this.bins.uffdFloor, ['pattern', this.seed, String(len)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exit = once(proc, 'exit');
    try {
      for await (const data of proc.stdout as AsyncIterable<Buffer>) {
        for (let off = 0; off < data.length;) {
          const n = Math.min(piece - used, data.length - off);
          data.copy(buf, used, off, off + n);
          used += n;
          off += n;
          if (used === piece) {
            source.provide(origin, buf);
            origin += piece;
            used = 0;
          }
        }
      }
      if (used > 0) source.provide(origin, buf.subarray(0, used));
      const [code] = (await exit) as [number | null];
      if (code !== 0) throw new Error(`uffd_floor pattern exited with ${code}: ${stderr.trim()}`);
      if (source.bytes !== len) throw new Error(`page source holds ${source.bytes} bytes, expected ${len}`);
      return source;
    } finally {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    }
  }
}
