/**
 * Defaults of a dump: where the image store lives and what an image is called when the user does not say.
 */
import { homedir } from 'node:os';
import { join } from 'node:path';
import { IMAGE_NAME_RE } from '../store/keys.js';

/** The service's data directory (root). */
export const SYSTEM_DATA_DIR = '/var/lib/lazyrestore';

/**
 * The data directory: `explicit` (--data-dir) when given, else $LAZYRESTORE_DATA_DIR, else /var/lib/lazyrestore
 * for root and $XDG_DATA_HOME/lazyrestore (~/.local/share/lazyrestore) for anyone else.
 */
export function defaultDataDir(explicit?: string, env: NodeJS.ProcessEnv = process.env): string {
  if (explicit !== undefined && explicit !== '') return explicit;
  const fromEnv = env['LAZYRESTORE_DATA_DIR'];
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  if (process.getuid?.() === 0) return SYSTEM_DATA_DIR;
  const xdg = env['XDG_DATA_HOME'];
  return join(xdg !== undefined && xdg !== '' ? xdg : join(homedir(), '.local', 'share'), 'lazyrestore');
}

function pad(n: number, width = 2): string {
  return String(n).padStart(width, '0');
}

/** `yyyymmddThhmmss` in UTC. */
export function compactTimestamp(d: Date): string {
  return (
    `${pad(d.getUTCFullYear(), 4)}${pad(d.getUTCMonth() + 1)}${pad(d.getUTCDate())}` +
    `T${pad(d.getUTCHours())}${pad(d.getUTCMinutes())}${pad(d.getUTCSeconds())}`
  );
}

/**
 * `<comm>-<pid>-<yyyymmddThhmmss>` (UTC) made to fit the store's name rule: characters outside
 * [A-Za-z0-9._-] become '_', a leading character that is not a letter or digit is dropped (a comm may be
 * anything up to 15 bytes), and an empty comm becomes 'process'.
 */
export function defaultImageName(comm: string, pid: number, at: Date): string {
  const clean = comm.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^[^A-Za-z0-9]+/, '');
  const name = `${clean === '' ? 'process' : clean}-${pid}-${compactTimestamp(at)}`;
  if (!IMAGE_NAME_RE.test(name)) throw new Error(`default image name ${JSON.stringify(name)} is not valid`);
  return name;
}
