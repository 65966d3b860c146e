/**
 * Where the daemon listens by default, shared by the daemon and its clients (kept free of heavy imports so the
 * CLI's client can use it without loading the daemon).
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The service's socket (root). */
export const SYSTEM_SOCKET = '/run/lazyrestore/api.sock';

/**
 * The API socket: $LAZYRESTORE_SOCKET when set, else /run/lazyrestore/api.sock for root and
 * $XDG_RUNTIME_DIR/lazyrestore/api.sock (or <tmpdir>/lazyrestore-<uid>/api.sock) for anyone else.
 */
export function defaultSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env['LAZYRESTORE_SOCKET'];
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  const uid = process.getuid?.() ?? 0;
  if (uid === 0) return SYSTEM_SOCKET;
  const runtime = env['XDG_RUNTIME_DIR'];
  if (runtime !== undefined && runtime !== '') return join(runtime, 'lazyrestore', 'api.sock');
  return join(tmpdir(), `lazyrestore-${uid}`, 'api.sock');
}

export interface TcpAddress {
  host: string;
  port: number;
}

/** 'HOST:PORT' or '[IPv6]:PORT'; port 0 asks the kernel for a free one. */
export function parseHostPort(text: string): TcpAddress | null {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(text);
  if (m === null) return null;
  const port = Number(m[3]);
  if (port > 65535) return null;
  return { host: m[1] ?? m[2]!, port };
}
