/**
 * A hand-written SVG of latency distributions: one panel per distribution,
 * each the CDF of ours against the C floor, latency on a logarithmic
 * microsecond axis. The percentile axis is linear up to p90 (the lower half
 * of the panel) and logarithmic in 1 - q above it (p90, p99, p99.9 equally
 * spaced), so the body and the tail are both readable. Drawn from the same
 * CDF summaries the JSON holds, so a figure can be redrawn from the JSON.
 */
import { formatNumber } from './table.js';
import type { Distribution, DistributionSummary } from './types.js';

const WIDTH = 760;
const PANEL = 350;
const M = { left: 64, right: 24, top: 84, bottom: 52 };
const COLORS = { ours: '#d62728', reference: '#4d4d4d' };
/** Colours of a panel's further curves (Distribution.others), in order. */
const OTHER_COLORS = ['#1f77b4', '#2ca02c', '#9467bd'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** The value at cumulative fraction q (the closest sampled point). */
function at(d: DistributionSummary, q: number): number {
  let best = d.cdf[0]!;
  for (const p of d.cdf) if (Math.abs(p[1] - q) < Math.abs(best[1] - q)) best = p;
  return best[0];
}

/** 1, 2 and 5 times each power of ten within [lo, hi]. */
function logTicks(lo: number, hi: number): number[] {
  const ticks: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= lo * 0.999 && v <= hi * 1.001) ticks.push(Number(v.toPrecision(3)));
    }
  }
  return ticks;
}

/** Height of one legend line; a panel with further curves grows by one line per curve. */
const LEGEND_LINE = 17;

function panelHeight(d: Distribution): number {
  return PANEL + LEGEND_LINE * (d.others?.length ?? 0);
}

function panel(d: Distribution, y0: number): string {
  const others = d.others ?? [];
  const top = M.top + LEGEND_LINE * others.length;
  const plotW = WIDTH - M.left - M.right;
  const plotH = PANEL - M.top - M.bottom;
  const values = [d.ours, d.reference, ...others].flatMap((s) => [s.min, s.max]).filter((v) => v > 0);
  const lo = 10 ** Math.floor(Math.log10(Math.min(...values)));
  let hi = 10 ** Math.ceil(Math.log10(Math.max(...values)));
  if (hi <= lo) hi = lo * 10;
  const x = (v: number) => M.left + (Math.log10(Math.max(v, lo) / lo) / Math.log10(hi / lo)) * plotW;
  // The tail goes up to the finest fraction the samples resolve (at most p99.99).
  const tail =
    Math.min(4, Math.log10(Math.max(10, Math.min(d.ours.count, d.reference.count, ...others.map((o) => o.count))))) - 1;
  const body = Math.max(tail, 1);
  const t = (q: number) => (q <= 0.9 ? (q / 0.9) * body : body + Math.min(tail, -Math.log10(1 - q) - 1));
  // The maximum (q = 1) gets a band of its own above the finest percentile.
  const height = body + tail + 0.4;
  const y = (q: number) => y0 + top + (1 - (q >= 1 ? height : t(q)) / height) * plotH;
  const out: string[] = [];
  out.push(`<text x="${M.left}" y="${y0 + 30}" class="title">${esc(d.title)}</text>`);
  // Grid and axes.
  for (const t of logTicks(lo, hi)) {
    const major = Number.isInteger(Math.log10(t));
    out.push(
      `<line x1="${x(t).toFixed(1)}" y1="${y(0)}" x2="${x(t).toFixed(1)}" y2="${y(1)}" class="${major ? 'grid major' : 'grid'}"/>`,
      `<text x="${x(t).toFixed(1)}" y="${y(0) + 16}" class="tick" text-anchor="middle">${formatNumber(t)}</text>`,
    );
  }
  for (const q of [0, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 0.9999].filter((q) => -Math.log10(1 - q) - 1 <= tail + 1e-9)) {
    out.push(
      `<line x1="${M.left}" y1="${y(q).toFixed(1)}" x2="${M.left + plotW}" y2="${y(q).toFixed(1)}" class="grid"/>`,
      `<text x="${M.left - 6}" y="${(y(q) + 4).toFixed(1)}" class="tick" text-anchor="end">${q === 0 ? '0' : `p${Number((q * 100).toFixed(2))}`}</text>`,
    );
  }
  out.push(
    `<text x="${M.left - 6}" y="${y(1) + 4}" class="tick" text-anchor="end">max</text>`,
    `<rect x="${M.left}" y="${y(1)}" width="${plotW}" height="${plotH}" class="frame"/>`,
    `<text x="${M.left + plotW / 2}" y="${y(0) + 36}" class="label" text-anchor="middle">microseconds (log scale)</text>`,
    `<text x="${M.left - 48}" y="${(y(0) + y(1)) / 2}" class="label" text-anchor="middle" transform="rotate(-90 ${M.left - 48} ${(y(0) + y(1)) / 2})">percentile</text>`,
  );
  // The curves, then the legend between the title and the plot.
  const series: Array<[DistributionSummary, string]> = [
    [d.reference, COLORS.reference],
    ...others.map((o, i): [DistributionSummary, string] => [o, OTHER_COLORS[i % OTHER_COLORS.length]!]),
    [d.ours, COLORS.ours],
  ];
  for (const [s, color] of series) {
    const pts = s.cdf.map(([v, q]) => `${x(v).toFixed(1)},${y(q).toFixed(1)}`).join(' ');
    out.push(`<polyline points="${pts}" fill="none" stroke="${color}" stroke-width="2"/>`);
  }
  series.forEach(([s, color], i) => {
    const lx = M.left + 4;
    const ly = y0 + 50 + i * LEGEND_LINE;
    const text =
      `${s.label}: p50 ${formatNumber(at(s, 0.5))} · p99 ${formatNumber(at(s, 0.99))} · ` +
      `max ${formatNumber(s.max)} µs (n=${s.count})`;
    out.push(
      `<line x1="${lx}" y1="${ly - 4}" x2="${lx + 20}" y2="${ly - 4}" stroke="${color}" stroke-width="3"/>`,
      `<text x="${lx + 26}" y="${ly}" class="legend">${esc(text)}</text>`,
    );
  });
  return out.join('\n');
}

export function renderSvg(distributions: Distribution[], heading: string, subheading: string): string {
  let y0 = 56;
  const panels: string[] = [];
  for (const d of distributions) {
    panels.push(panel(d, y0));
    y0 += panelHeight(d);
  }
  const height = y0 + 8;
  const body = panels.join('\n');
  return `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="sans-serif">
<style>
  .title { font-size: 14px; font-weight: bold; }
  .heading { font-size: 16px; font-weight: bold; }
  .sub { font-size: 11px; fill: #555; }
  .tick { font-size: 10px; fill: #333; }
  .label { font-size: 11px; fill: #333; }
  .legend { font-size: 11px; }
  .grid { stroke: #e4e4e4; stroke-width: 1; }
  .grid.major { stroke: #c8c8c8; }
  .frame { fill: none; stroke: #888; }
</style>
<rect width="100%" height="100%" fill="white"/>
<text x="${M.left}" y="24" class="heading">${esc(heading)}</text>
<text x="${M.left}" y="42" class="sub">${esc(subheading)}</text>
${body}
</svg>
`;
}
