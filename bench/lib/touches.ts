/** The first-touch samples restore_workload prints for `lat` ("SAMPLES n", then "<ns> <resident>" lines). */

export interface Touches {
  /** Every touch (ns). */
  ns: number[];
  /** The touches of pages that were not resident yet (mincore before the touch): real faults. */
  missing: number[];
}

/** Parses the lines up to and including "LAT OK" (OutputFile.waitFor returns exactly those). */
export function parseTouches(lines: readonly string[]): Touches {
  const at = lines.findIndex((l) => l.startsWith('SAMPLES'));
  if (at < 0) throw new Error('restore_workload: no SAMPLES line');
  const n = Number(lines[at]!.split(' ')[1]);
  const pairs = lines.slice(at + 1, at + 1 + n).map((l) => l.split(' ').map(Number));
  if (pairs.length !== n || pairs.some((p) => p.length !== 2 || !p.every(Number.isFinite)))
    throw new Error('restore_workload: bad SAMPLES');
  return { ns: pairs.map((p) => p[0]!), missing: pairs.filter((p) => p[1] === 0).map((p) => p[0]!) };
}
