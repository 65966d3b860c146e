/**
 * 2 MiB huge pages for the hugetlb tests: reserved through /proc/sys/vm/nr_hugepages on top of what the host
 * already has, the previous value put back afterwards; when they cannot be had, `skip` says why.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { availableHugePages } from '../../daemon/restore/memory.js';
import { native, UFFD_FEATURES } from '../../native/index.js';

export const HUGE = 2 << 20;
export const NR_HUGEPAGES = '/proc/sys/vm/nr_hugepages';

export function nrHugePages(): number {
  return Number(readFileSync(NR_HUGEPAGES, 'utf8').trim());
}

export function setNrHugePages(n: number): void {
  writeFileSync(NR_HUGEPAGES, `${n}\n`);
}

export class HugePages {
  /** Why the tests cannot run here, or false. */
  skip: string | false = false;
  private previous: number | null = null;

  /** Asks for twice `needed` more pages: a program and its restored copy never need them at the same time, but a
   *  slow reap of the dumped one could overlap. Also requires UFFD_FEATURE_MISSING_HUGETLBFS. */
  reserve(needed: number): void {
    if ((native.uffdProbe().features & UFFD_FEATURES.UFFD_FEATURE_MISSING_HUGETLBFS) === 0) {
      this.skip = 'this kernel offers no UFFD_FEATURE_MISSING_HUGETLBFS';
      return;
    }
    if (!existsSync(NR_HUGEPAGES)) {
      this.skip = `${NR_HUGEPAGES} does not exist (no hugetlb support)`;
      return;
    }
    this.previous = nrHugePages();
    try {
      setNrHugePages(this.previous + 2 * needed);
    } catch (e) {
      this.skip = `cannot reserve huge pages through ${NR_HUGEPAGES}: ${(e as Error).message}`;
      return;
    }
    const free = availableHugePages(HUGE);
    if (free < needed) {
      this.skip = `only ${free} free 2 MiB huge pages after asking for ${2 * needed} more (memory too fragmented?)`;
    }
  }

  /** Puts the previous pool size back. */
  release(): void {
    if (this.previous !== null) setNrHugePages(this.previous);
    this.previous = null;
  }
}
