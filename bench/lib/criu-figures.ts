/**
 * Figures of ours against criu measured in the same run, where criu may
 * have failed. A failed criu run is a result: the figure keeps our value,
 * its reference is null and `referenceError` carries criu's words, so the
 * table prints FAILED and the JSON says why. Nothing is dropped and no
 * number stands in for one criu did not produce.
 */
import { figure } from './stats.js';
import type { Better, Figure, RatioTarget } from './types.js';

export type Attempt<T> = { ok: true; value: T } | { ok: false; error: string };

/** Runs `fn`, keeping its error as text (criu's, when it is a CriuError). */
export async function attempt<T>(fn: () => Promise<T>): Promise<Attempt<T>> {
  try {
    return { ok: true, value: await fn() };
  } catch (e) {
    return { ok: false, error: e instanceof Error ? e.message : String(e) };
  }
}

/** The value of an attempt, or the attempt's failure carried on (for figures derived from it). */
export function map<T, U>(a: Attempt<T>, fn: (v: T) => U): Attempt<U> {
  return a.ok ? { ok: true, value: fn(a.value) } : a;
}

/**
 * Ours against criu's value. `criu.value` null means criu ran but does not report this figure (e.g. no
 * "Frozen time" line): then there is no reference, and the reference name says so.
 */
export function vsCriu(
  name: string,
  unit: string,
  better: Better,
  ours: number,
  criu: Attempt<number | null>,
  label: string,
  target?: RatioTarget,
): Figure {
  if (!criu.ok) return { ...figure(name, unit, better, ours, null, label), referenceError: criu.error };
  if (criu.value === null) return figure(name, unit, better, ours, null, `${label}: not reported by criu`);
  return figure(name, unit, better, ours, criu.value, `${label} (measured in this run)`, target);
}
