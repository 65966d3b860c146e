/**
 * The parts of systemd's service protocol the daemon speaks itself, without libsystemd (sd_notify(3),
 * sd_listen_fds(3)): readiness and stopping notifications, and the file-descriptor store (FDSTORE=1) that keeps the
 * uffds of lazy tasks across restarts of the service.
 */
import { native } from '../../native/index.js';

/** Whether this process was started by systemd with a notify socket (Type=notify). */
export function underSystemd(): boolean {
  return Boolean(process.env['NOTIFY_SOCKET']);
}

/** A datagram socket connected to $NOTIFY_SOCKET (abstract when it starts with '@'). */
export function connectNotify(): number {
  const path = process.env['NOTIFY_SOCKET'];
  if (!path) throw new Error('NOTIFY_SOCKET is not set');
  return native.unixConnect(path, 'dgram');
}

/** Sends one notification ("READY=1", "STOPPING=1", "STATUS=..."); a no-op outside systemd. */
export function sdNotify(text: string): void {
  if (!underSystemd()) return;
  const fd = connectNotify();
  try {
    native.unixSend(fd, text);
  } finally {
    native.closeFd(fd);
  }
}

/** Fds systemd passed at start ($LISTEN_FDS from fd 3, named by $LISTEN_FDNAMES), by name. Read once: the
 *  variables are removed so that children do not inherit them. */
export function takeListenFds(): Map<string, number> {
  const out = new Map<string, number>();
  const pid = Number(process.env['LISTEN_PID']);
  const count = Number(process.env['LISTEN_FDS']);
  const names = (process.env['LISTEN_FDNAMES'] ?? '').split(':');
  delete process.env['LISTEN_PID'];
  delete process.env['LISTEN_FDS'];
  delete process.env['LISTEN_FDNAMES'];
  if (pid !== process.pid || !Number.isInteger(count) || count <= 0) return out;
  for (let i = 0; i < count; i++) out.set(names[i] || `unknown-${i}`, 3 + i);
  return out;
}
