/** Summaries of samples and the construction of figures. */
import type { Better, DistributionSummary, Figure, RatioTarget } from './types.js';

export function sorted(samples: readonly number[]): number[] {
  // A typed array sorts numerically (Array#sort would compare strings).
  return Array.from(Float64Array.from(samples).sort());
}

/** Nearest-rank quantile of ascending `s` (q in [0, 1]). */
export function quantile(s: readonly number[], q: number): number {
  if (s.length === 0) throw new Error('quantile of no samples');
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}

export function mean(v: readonly number[]): number {
  return v.reduce((a, b) => a + b, 0) / v.length;
}

export function median(v: readonly number[]): number {
  const s = sorted(v);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Fractions at which a CDF is sampled: steps of 0.5% up to p90, then the
 *  tail evenly on a log scale (p90, p99, p99.9, p99.99 equally dense). */
const CDF_POINTS = [
  ...Array.from({ length: 180 }, (_, i) => i / 200),
  ...Array.from({ length: 151 }, (_, i) => 1 - 10 ** -(1 + i / 50)),
];

/** A CDF of nanosecond samples, in microseconds. */
export function summarize(label: string, ns: readonly number[]): DistributionSummary {
  const s = sorted(ns).map((v) => v / 1000);
  const cdf: Array<[number, number]> = CDF_POINTS.map((q) => [round(quantile(s, q)), Number(q.toPrecision(6))]);
  cdf.push([round(s[s.length - 1]!), 1]);
  return {
    label,
    count: s.length,
    unit: 'us',
    min: round(s[0]!),
    max: round(s[s.length - 1]!),
    mean: round(mean(s)),
    cdf,
  };
}

/** Rounds to 4 significant digits (figures are not more precise than that). */
export function round(v: number): number {
  return v === 0 || !Number.isFinite(v) ? v : Number(v.toPrecision(4));
}

export function figure(
  name: string,
  unit: string,
  better: Better,
  ours: number,
  reference: number | null,
  referenceName: string | null,
  target?: RatioTarget,
): Figure {
  const ratio = reference === null || reference === 0 ? null : round(ours / reference);
  let met: boolean | null = null;
  if (target && ratio !== null) {
    met = (target.max === undefined || ratio <= target.max) && (target.min === undefined || ratio >= target.min);
  }
  return {
    name,
    unit,
    better,
    ours: round(ours),
    reference: reference === null ? null : round(reference),
    referenceName,
    ratio,
    target: target && met !== null ? { ...target, met } : null,
  };
}

/** p50/p90/p99/max figures (in µs) of two sets of nanosecond samples. */
export function latencyFigures(
  prefix: string,
  ours: readonly number[],
  reference: readonly number[],
  referenceName: string,
  p50Target?: RatioTarget,
): Figure[] {
  const a = sorted(ours);
  const b = sorted(reference);
  const us = (s: number[], q: number) => quantile(s, q) / 1000;
  return [
    figure(`${prefix}p50`, 'us', 'lower', us(a, 0.5), us(b, 0.5), referenceName, p50Target),
    figure(`${prefix}p90`, 'us', 'lower', us(a, 0.9), us(b, 0.9), referenceName),
    figure(`${prefix}p99`, 'us', 'lower', us(a, 0.99), us(b, 0.99), referenceName),
    figure(`${prefix}max`, 'us', 'lower', a[a.length - 1]! / 1000, b[b.length - 1]! / 1000, referenceName),
  ];
}
