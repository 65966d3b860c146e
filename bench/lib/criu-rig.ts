/**
 * The apparatus of the criu-* scenarios: the same workload as ours
 * (bench/reference/restore_workload.c, same sizes, same seeds, same command
 * file), dumped and restored by the criu binary of $CRIU instead of by
 * lazyrestore. Differences from RestoreRig, each forced by criu:
 *
 * - The workload runs in a session of its own (`restore_launch OUT setsid
 *   WORKLOAD ...`), so criu needs no --shell-job: criu refuses to dump a task
 *   whose session leader is outside the dumped tree.
 * - criu restores a process into a new time namespace whose offsets keep
 *   CLOCK_MONOTONIC continuous with the dump (criu 3.14+ on kernels with
 *   time namespaces). The restored program's stamps are therefore shifted;
 *   /proc/<pid>/timens_offsets gives the shift, and every stamp is moved
 *   back onto the bench's clock before it is compared with one of ours.
 * - The restored program is found running by its first line after the
 *   rewind: the output file is cut back to its size at the dump (criu, like
 *   ours, refuses an open file whose size changed), so any line past that
 *   was written by the restored copy.
 *
 * A failed criu dump is remembered per image, so every scenario that needs
 * the image reports criu's error instead of dumping again.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stop, type Criu, type CriuDump, type CriuProcess } from './criu.js';
import { LineProcess, trackPid, untrackPid } from './process.js';
import { OutputFile, gone, nowNs } from './restore-rig.js';

export interface CriuImage {
  name: string;
  dir: string;
  pid: number;
  out: OutputFile;
  /** Size of the output file at the dump. */
  outSize: number;
  go: string;
  dump: CriuDump;
}

/** A criu restore in progress: the restored program has printed its first line. */
export interface CriuRestored {
  image: CriuImage;
  lazy: boolean;
  /** Right before the spawn of `criu restore` (bench clock, ns). */
  t0: bigint;
  /** The first line the restored program wrote, and the lines after it read so far are in `image.out`. */
  firstLine: string;
  /** CLOCK_MONOTONIC of the restored program minus the bench's (ns). */
  offsetNs: bigint;
  restore: CriuProcess;
  daemon: CriuProcess | null;
  /** ms from `t0` until the lazy-pages daemon exited (every page placed); set by `finish`. */
  completeMs: number | null;
  /** ms the lazy-pages daemon took from its spawn until it listened (not part of `t0`). */
  daemonStartMs: number | null;
}

/** The time namespace offset of CLOCK_MONOTONIC for `pid` (0 when it shares ours). */
export function monotonicOffsetNs(pid: number): bigint {
  const text = readFileSync(`/proc/${pid}/timens_offsets`, 'utf8');
  const m = /^monotonic\s+(-?\d+)\s+(\d+)/m.exec(text);
  if (!m) throw new Error(`/proc/${pid}/timens_offsets has no monotonic line: ${text}`);
  return BigInt(m[1]!) * 1_000_000_000n + BigInt(m[2]!);
}

function kill(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

export class CriuRig {
  readonly dir = mkdtempSync(join(tmpdir(), 'lazyrestore-bench-criu-'));
  #n = 0;
  readonly #images = new Map<number, Promise<CriuImage>>();

  constructor(
    readonly criu: Criu,
    readonly workload: string,
    readonly launcher: string,
    readonly log: (message: string) => void,
  ) {}

  /** `CRIU <version>`, for reference names. */
  get label(): string {
    return `CRIU ${this.criu.version}`;
  }

  /** The criu image of a `mib` MiB workload, dumped once per run (its seed is RestoreRig's for the same size,
   *  so both tools dump the same bytes). A failure is kept and returned to every later caller. */
  image(mib: number): Promise<CriuImage> {
    let p = this.#images.get(mib);
    if (!p) {
      p = this.#dump(mib, String(0x5eed0000 + mib * 16));
      this.#images.set(mib, p);
    }
    return p;
  }

  async #dump(mib: number, seed: string): Promise<CriuImage> {
    const name = `criu-${++this.#n}`;
    this.log(`criu: dumping a ${mib} MiB workload with ${this.label} (${name})`);
    const outPath = join(this.dir, `${name}.out`);
    const go = join(this.dir, `${name}.go`);
    const dir = join(this.dir, name);
    mkdirSync(dir);
    const launch = new LineProcess(this.launcher, [outPath, 'setsid', this.workload, String(mib), seed, go]);
    let pid = 0;
    try {
      pid = Number((await launch.waitFor('PID', 30_000)).split(' ')[1]);
      trackPid(pid);
      const out = new OutputFile(outPath);
      await out.waitFor(
        'READY',
        (l) => l.startsWith('READY'),
        () => !launch.exited,
      );
      const dump = await this.criu.dump(pid, dir);
      // criu killed the workload; the launcher reaps it, and then its pid is free for a restore.
      await gone(pid, 60_000);
      return { name, dir, pid, out, outSize: statSync(outPath).size, go, dump };
    } finally {
      // A failed dump leaves the workload running.
      if (pid) {
        kill(pid);
        untrackPid(pid);
      }
      await launch.kill();
    }
  }

  /** Writes the command the restored program runs as soon as it looks. */
  command(img: CriuImage, line: string): void {
    writeFileSync(img.go, line + '\n');
  }

  clearCommand(img: CriuImage): void {
    rmSync(img.go, { force: true });
  }

  /** Restores `img` (lazily through a lazy-pages daemon, or eagerly) and waits until the restored program
   *  has written its first line. `t0` is taken after the daemon listens: the daemon's start-up is reported
   *  apart, as it can run before the restore is asked for. */
  async restore(img: CriuImage, lazy: boolean): Promise<CriuRestored> {
    img.out.rewind(img.outSize);
    const tag = `${lazy ? 'lazy' : 'eager'}-${++this.#n}`;
    let daemon: CriuProcess | null = null;
    let daemonStartMs: number | null = null;
    if (lazy) {
      const d0 = nowNs();
      daemon = await this.criu.lazyPages(img.dir, `lazy-pages-${tag}`);
      daemonStartMs = Number(nowNs() - d0) / 1e6;
      trackPid(daemon.child.pid!);
    }
    const t0 = nowNs();
    const restore = this.criu.restore(img.dir, lazy, `restore-${tag}`);
    trackPid(img.pid);
    if (restore.child.pid) trackPid(restore.child.pid);
    const r: CriuRestored = {
      image: img,
      lazy,
      t0,
      firstLine: '',
      offsetNs: 0n,
      restore,
      daemon,
      completeMs: null,
      daemonStartMs,
    };
    // A lazy-pages daemon that died leaves the restored program blocked in its first fault: that is a failure
    // too, with the daemon's log.
    const daemonOk = () => !daemon || daemon.running() || daemon.child.exitCode === 0;
    try {
      const lines = await img.out
        .waitFor(
          'the first line of the restored program',
          () => true,
          () => restore.running() && daemonOk(),
          120_000,
        )
        .catch((e: Error) => {
          if (!restore.running()) throw this.criu.failed(restore, 'before the restored program wrote a line');
          if (!daemonOk()) throw this.criu.failed(daemon!, 'before the restored program wrote a line');
          throw e;
        });
      r.firstLine = lines[0]!;
      r.offsetNs = monotonicOffsetNs(img.pid);
      return r;
    } catch (e) {
      await this.finish(r).catch(() => undefined);
      throw e;
    }
  }

  /** A stamp written by the restored program, as ms after `t0` on the bench's clock. */
  msAfterT0(r: CriuRestored, stampNs: bigint): number {
    return Number(stampNs - r.offsetNs - r.t0) / 1e6;
  }

  /** Waits (lazy restores) for the daemon to have placed every page, kills the restored program, and waits
   *  until criu restore has reaped it and its pid is free again. */
  async finish(r: CriuRestored, waitComplete = false): Promise<void> {
    try {
      if (r.daemon && waitComplete) {
        const code = await Promise.race([r.daemon.exit, sleepMs(300_000).then(() => 'timeout' as const)]);
        if (code === 'timeout') throw new Error('criu lazy-pages did not finish within 300 s');
        if (code !== 0) throw this.criu.failed(r.daemon, 'while serving the restored program');
        r.completeMs = Number(nowNs() - r.t0) / 1e6;
      }
    } finally {
      kill(r.image.pid);
      // criu restore is the restored root's parent: let it reap the root and exit by itself, so no zombie is
      // left for init; kill it only if it hangs.
      await Promise.race([r.restore.exit, sleepMs(10_000)]);
      await stop(r.restore);
      if (r.daemon) await stop(r.daemon);
      await gone(r.image.pid);
      for (const p of [r.image.pid, r.restore.child.pid, r.daemon?.child.pid]) if (p) untrackPid(p);
    }
  }

  close(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function sleepMs(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
