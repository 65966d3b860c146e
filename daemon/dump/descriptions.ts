/**
 * Which fds of the frozen tree share one open file description (dup(2), or inherited across fork(2):
 * stdout and stderr after `2>&1`, a log file a parent opened before forking). Such fds share their
 * offset and status flags, so restore must recreate one description for all of them, or a program
 * writing through two of them would overwrite its own output.
 *
 * Only kcmp(2) KCMP_FILE can tell. Candidates are grouped first by what they open (same file, same
 * device, same FIFO), so kcmp runs only inside small groups. Pipes are left out: restore recreates a
 * pipe's ends from the pipe id, and both ends carry no offset.
 */
import { native } from '../../native/index.js';
import type { FdRecord } from './image.js';

export interface FdOwner {
  pid: number;
  records: FdRecord[];
}

interface Member {
  pid: number;
  record: FdRecord;
}

function candidateKey(r: FdRecord): string | undefined {
  switch (r.kind) {
    case 'file':
      return `file:${r.dev}:${r.ino}`;
    case 'directory':
    case 'chardev':
      return `${r.kind}:${r.path}`;
    case 'fifo':
      return `fifo:${r.pipe}`;
    case 'pipe':
      return undefined;
  }
}

/** Splits one candidate group into classes of fds that kcmp says are the same description. */
function partition(members: Member[]): Member[][] {
  const classes: Member[][] = [];
  for (const m of members) {
    const same = classes.find(([first]) => native.kcmpFiles(first!.pid, first!.record.fd, m.pid, m.record.fd) === 0);
    if (same) same.push(m);
    else classes.push([m]);
  }
  return classes;
}

/** Sets `description` on every fd record that shares its open file description with another fd of the tree. */
export function assignDescriptions(owners: FdOwner[]): void {
  const groups = new Map<string, Member[]>();
  for (const { pid, records } of owners) {
    for (const record of records) {
      const key = candidateKey(record);
      if (key === undefined) continue;
      const group = groups.get(key);
      if (group) group.push({ pid, record });
      else groups.set(key, [{ pid, record }]);
    }
  }
  let next = 1;
  for (const group of groups.values()) {
    if (group.length < 2) continue;
    for (const cls of partition(group)) {
      if (cls.length < 2) continue;
      const id = `d${next++}`;
      for (const m of cls) m.record.description = id;
    }
  }
}
