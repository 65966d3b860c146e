/**
 * The keeper (native/keeper/keeper.c): a tiny process outside the daemon that holds a copy of every uffd the page
 * service serves, so that a daemon crash or restart never closes the last copy (which would hand lazy tasks zero
 * pages). Started on demand, detached in a session of its own so that a kill of the daemon's process group or a
 * `kill -9` of the daemon leaves it alone; it exits by itself once it holds nothing and nobody is connected.
 */
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { builtFile, isSystemError, native } from '../../native/index.js';
import { LazyRestoreError } from '../errors.js';

const START_TIMEOUT_MS = 5_000;
const ANSWER_TIMEOUT_MS = 5_000;

/** build/Release/lazyrestore-keeper at the package root (built by node-gyp with the addon). */
export function keeperPath(): string {
  const path = builtFile('lazyrestore-keeper');
  if (path !== null) return path;
  throw new LazyRestoreError('CUSTODY_UNAVAILABLE', 'the keeper is not built: run `npm run setup` (node-gyp rebuild)');
}

function startKeeper(socketPath: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(keeperPath(), [socketPath], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => finish(new Error('no answer within 5 s')), START_TIMEOUT_MS);
    const finish = (e?: Error) => {
      clearTimeout(timer);
      child.stdout.destroy();
      child.stderr.destroy();
      child.removeAllListeners();
      child.unref();
      if (e)
        reject(new LazyRestoreError('CUSTODY_UNAVAILABLE', `cannot start the keeper at ${socketPath}: ${e.message}`));
      else resolve();
    };
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready\n')) finish();
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', (e) => finish(e));
    child.on('exit', (code) => finish(new Error(err.trim() || `exited with status ${code}`)));
  });
}

/** Connects to the keeper at `socketPath` and checks that it answers (a keeper about to exit does not). */
function tryConnect(socketPath: string): number | null {
  let fd: number;
  try {
    fd = native.unixConnect(socketPath, 'seqpacket');
  } catch (e) {
    if (isSystemError(e) && (e.code === 'ENOENT' || e.code === 'ECONNREFUSED')) return null;
    throw e;
  }
  try {
    native.unixSend(fd, 'PING');
    if (native.unixRecv(fd, ANSWER_TIMEOUT_MS)?.text === 'PONG') return fd;
  } catch {
    // a keeper that is leaving: start another
  }
  native.closeFd(fd);
  return null;
}

/** A connection to the keeper, started when none listens at `socketPath`. */
export async function connectKeeper(socketPath: string): Promise<number> {
  for (let attempt = 0; attempt < 3; attempt++) {
    const fd = tryConnect(socketPath);
    if (fd !== null) return fd;
    // A socket nobody listens on is left by a keeper that was killed.
    rmSync(socketPath, { force: true });
    await startKeeper(socketPath);
  }
  throw new LazyRestoreError('CUSTODY_UNAVAILABLE', `the keeper at ${socketPath} does not answer`);
}

/** Every fd the keeper holds under a name starting with `prefix` (copies: it keeps its own). */
export function keeperTake(fd: number, prefix: string): Map<string, number> {
  native.unixSend(fd, `TAKE ${prefix}`);
  const out = new Map<string, number>();
  for (;;) {
    const m = native.unixRecv(fd, ANSWER_TIMEOUT_MS);
    if (m === null) throw new LazyRestoreError('CUSTODY_UNAVAILABLE', 'the keeper closed the connection');
    if (m.text === 'END') return out;
    if (m.text.startsWith('FD ') && m.fd !== null) out.set(m.text.slice(3), m.fd);
    else if (m.fd !== null) native.closeFd(m.fd);
  }
}

export function keeperDrop(fd: number, name: string): void {
  native.unixSend(fd, `DROP ${name}`);
}
