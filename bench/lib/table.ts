/** The human-readable table printed at the end of a run. */
import type { Figure } from './types.js';

export interface TableRow {
  scenario: string;
  figure: Figure;
}

/** Compact numbers: 3 significant digits, thousands grouped for large ones. */
export function formatNumber(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString('en-US');
  return Number(v.toPrecision(3)).toString();
}

function cells(row: TableRow): string[] {
  const f = row.figure;
  const unit = f.unit;
  const ratio = f.ratio === null ? '-' : `${formatNumber(f.ratio)}x`;
  let target = '';
  if (f.target) target = `${f.target.met ? 'met' : 'MISSED'} (${f.target.text})`;
  // A reference that was tried and failed is a result, not a gap: it says so in its own cell.
  if (f.referenceError !== undefined) target = 'reference failed: see below';
  let reference = f.reference === null ? '-' : `${formatNumber(f.reference)} ${unit}`;
  if (f.referenceError !== undefined) reference = 'FAILED';
  return [row.scenario, f.name, `${formatNumber(f.ours)} ${unit}`, reference, ratio, target];
}

export function renderTable(rows: TableRow[]): string {
  const header = ['scenario', 'figure', 'ours', 'reference', 'ours/ref', 'target'];
  const body = rows.map(cells);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)));
  // Numbers right-aligned, text left-aligned.
  const right = [false, false, true, true, true, false];
  const line = (r: string[]) =>
    r
      .map((c, i) => (right[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  const rule = widths.map((w) => '-'.repeat(w)).join('  ');
  let last = '';
  const out = [line(header), rule];
  for (let i = 0; i < body.length; i++) {
    const r = body[i]!;
    // The scenario name only on its first row.
    out.push(line(r[0] === last ? ['', ...r.slice(1)] : r));
    last = r[0]!;
  }
  return out.join('\n');
}
