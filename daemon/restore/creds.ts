/**
 * Credentials of restored threads (setgroups(2), setresgid(2), setresuid(2), setfsuid(2), setfsgid(2),
 * capset(2), prctl(2) PR_CAPBSET_DROP / PR_SET_KEEPCAPS / PR_CAP_AMBIENT / PR_SET_NO_NEW_PRIVS /
 * PR_SET_DUMPABLE; capabilities(7), credentials(7)).
 *
 * Credentials are per thread at the syscall level, so every thread gets them, as the last privileged step:
 * after it the task may no longer create a userfaultfd or change its mm fields.
 */
import { readStatus } from '../proc/index.js';
import type { CredsRecord } from '../dump/image.js';
import type { ProcTask, RestoreContext } from './context.js';
import type { Batch } from './inject.js';
import { CAP_LAST, PR, PR_CAP_AMBIENT_CLEAR_ALL, PR_CAP_AMBIENT_RAISE, SYS } from './sys.js';

const LINUX_CAPABILITY_VERSION_3 = 0x20080522;

function sameAsHelper(c: CredsRecord, pid: number): boolean {
  const s = readStatus(pid);
  const ids = (a: number[], b: { real: number; effective: number; saved: number; fs: number }) =>
    a.join(',') === [b.real, b.effective, b.saved, b.fs].join(',');
  return (
    ids(c.uid, s.uid) &&
    ids(c.gid, s.gid) &&
    c.groups.join(',') === s.groups.join(',') &&
    BigInt(c.caps.inh) === s.capInh &&
    BigInt(c.caps.prm) === s.capPrm &&
    BigInt(c.caps.eff) === s.capEff &&
    BigInt(c.caps.bnd) === s.capBnd &&
    BigInt(c.caps.amb) === s.capAmb
  );
}

function capData(b: Batch, c: CredsRecord): number {
  const data = Buffer.alloc(24);
  const eff = BigInt(c.caps.eff);
  const prm = BigInt(c.caps.prm);
  const inh = BigInt(c.caps.inh);
  for (let i = 0; i < 2; i++) {
    const shift = BigInt(32 * i);
    data.writeUInt32LE(Number((eff >> shift) & 0xffffffffn), i * 12);
    data.writeUInt32LE(Number((prm >> shift) & 0xffffffffn), i * 12 + 4);
    data.writeUInt32LE(Number((inh >> shift) & 0xffffffffn), i * 12 + 8);
  }
  return b.put(data);
}

function queueCreds(b: Batch, c: CredsRecord): void {
  const bnd = BigInt(c.caps.bnd);
  for (let cap = 0; cap <= CAP_LAST; cap++) {
    if (!(bnd & (1n << BigInt(cap))))
      b.call(`prctl(PR_CAPBSET_DROP, ${cap})`, SYS.prctl, [PR.CAPBSET_DROP, cap], { allowFail: true });
  }
  const groups = Buffer.alloc(4 * Math.max(1, c.groups.length));
  c.groups.forEach((g, i) => groups.writeUInt32LE(g, i * 4));
  b.call('setgroups', SYS.setgroups, [c.groups.length, b.put(groups)]);
  b.call('setresgid', SYS.setresgid, [c.gid[0], c.gid[1], c.gid[2]]);
  b.call('setfsgid', SYS.setfsgid, [c.gid[3]], { allowFail: true });
  b.call('prctl(PR_SET_KEEPCAPS, 1)', SYS.prctl, [PR.SET_KEEPCAPS, 1]);
  b.call('setresuid', SYS.setresuid, [c.uid[0], c.uid[1], c.uid[2]]);
  b.call('setfsuid', SYS.setfsuid, [c.uid[3]], { allowFail: true });
  const header = Buffer.alloc(8);
  header.writeUInt32LE(LINUX_CAPABILITY_VERSION_3, 0);
  b.call('capset', SYS.capset, [b.put(header), capData(b, c)]);
  b.call('prctl(PR_CAP_AMBIENT_CLEAR_ALL)', SYS.prctl, [PR.CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0]);
  const amb = BigInt(c.caps.amb);
  for (let cap = 0; cap <= CAP_LAST; cap++) {
    if (amb & (1n << BigInt(cap)))
      b.call(`prctl(PR_CAP_AMBIENT_RAISE, ${cap})`, SYS.prctl, [PR.CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0]);
  }
  b.call('prctl(PR_SET_KEEPCAPS, 0)', SYS.prctl, [PR.SET_KEEPCAPS, 0]);
  // A change of credentials makes the mm non-dumpable; the dumped process was (the dump read it).
  b.call('prctl(PR_SET_DUMPABLE, 1)', SYS.prctl, [PR.SET_DUMPABLE, 1]);
}

/** Gives every thread the dumped credentials (when they differ from the helper's), then no_new_privs. */
export async function restoreCreds(ctx: RestoreContext, task: ProcTask): Promise<void> {
  const c = task.image.record!.creds;
  const change = !sameAsHelper(c, task.pid);
  for (const tid of task.tids) {
    const b = ctx.batch(task, tid);
    if (change) queueCreds(b, c);
    if (c.noNewPrivs) b.call('prctl(PR_SET_NO_NEW_PRIVS)', SYS.prctl, [PR.SET_NO_NEW_PRIVS, 1, 0, 0, 0]);
    await b.run();
  }
}
