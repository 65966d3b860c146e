/**
 * Putting the API on its listeners: the unix socket (owner-only, or shared with one group) and the optional
 * TCP listener.
 */
import { readFileSync } from 'node:fs';
import { chmod, chown, lstat, mkdir, unlink } from 'node:fs/promises';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import { LazyRestoreError } from '../daemon/errors.js';
import type { ApiInstance } from './app.js';
import type { TcpAddress } from './endpoint.js';

/** An error shaped like Node's own system errors (code = errno name), for startup failures about a path. */
function pathError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

/** The gid of `group`: a number, or a name from /etc/group. */
export function resolveGroup(group: string): number {
  if (/^\d+$/.test(group)) return Number(group);
  let text = '';
  try {
    text = readFileSync('/etc/group', 'utf8');
  } catch {
    // No /etc/group: only numeric groups work.
  }
  for (const line of text.split('\n')) {
    const [name, , gid] = line.split(':');
    if (name === group && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  throw new LazyRestoreError('INVALID_ARGUMENT', `no such group: ${group} (give a name from /etc/group or a gid)`);
}

/** Whether something accepts connections on the unix socket at `path`. */
function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ path });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * Makes `path` ready to bind: creates its directory (0755) when missing, removes a stale socket left by a
 * daemon that died, and refuses to touch a live socket (another daemon) or anything that is not a socket.
 */
export async function prepareSocketPath(path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o755 });
  let isSocket: boolean;
  try {
    isSocket = (await lstat(path)).isSocket();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  if (!isSocket) throw pathError('EEXIST', `${path} exists and is not a socket: refusing to replace it`);
  if (await socketAnswers(path)) throw pathError('EADDRINUSE', `a daemon already listens on ${path}`);
  await unlink(path);
}

export interface UnixSocketOptions {
  path: string;
  /** Group that may connect too (socket mode 0660); else the socket is 0600. */
  gid?: number;
}

/** Listens on the unix socket with the right mode from the moment it exists. */
export async function listenUnix(app: ApiInstance, options: UnixSocketOptions): Promise<void> {
  await prepareSocketPath(options.path);
  // bind(2) creates the socket with mode 0777 & ~umask, and connect(2) only needs write permission on it: a
  // umask of 0177 makes it 0600 from the start, so there is no moment when others could connect. The umask
  // is process-wide, but only for this bind; files created meanwhile (the store's) can only get stricter.
  const previous = process.umask(0o177);
  try {
    await app.listen({ path: options.path });
  } finally {
    process.umask(previous);
  }
  try {
    if (options.gid !== undefined) {
      await chown(options.path, process.getuid?.() ?? 0, options.gid);
      await chmod(options.path, 0o660);
    } else {
      await chmod(options.path, 0o600);
    }
  } catch (e) {
    await unlink(options.path).catch(() => undefined);
    throw e;
  }
}

/** Listens on TCP; resolves with the address bound (the port the kernel chose for port 0). */
export async function listenTcp(app: ApiInstance, address: TcpAddress): Promise<TcpAddress> {
  await app.listen({ host: address.host, port: address.port });
  const bound = app.server.address();
  if (bound === null || typeof bound === 'string') throw new Error('the TCP listener has no address');
  return { host: bound.address, port: bound.port };
}
