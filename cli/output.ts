/**
 * Output shared by every command: one JSON document for `--json`, aligned
 * sections for people, and failures as one `lazyrestore: <message>` line on
 * stderr with exit status 1 (stack traces only with LAZYRESTORE_DEBUG=1).
 * Commands set process.exitCode rather than calling process.exit(), so output
 * written to a pipe is never cut short.
 */
import { readFileSync } from 'node:fs';

/** The `--json` option, for commands that can print a machine-readable result. */
export const jsonOption = {
  json: { type: 'boolean', default: false, describe: 'Print the result as one JSON document on stdout' },
} as const;

/** An error meant for the user: its message is the whole story, no stack needed. */
export class CliError extends Error {
  readonly code: string;

  constructor(message: string, code = 'ECLI') {
    super(message);
    this.name = 'CliError';
    this.code = code;
  }
}

export function debugEnabled(): boolean {
  return process.env['LAZYRESTORE_DEBUG'] === '1';
}

export function packageVersion(): string {
  // dist/cli/output.js and cli/output.ts both sit two levels below the package root.
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

/** Writes `lazyrestore: <line>` to stderr for each line and marks the run as failed. */
export function failWith(lines: string[]): void {
  for (const line of lines) process.stderr.write(`lazyrestore: ${line}\n`);
  process.exitCode = 1;
}

/** The single place where a command's error becomes output and an exit status. */
export function reportError(e: unknown): void {
  const error = e instanceof Error ? e : new Error(String(e));
  failWith([error.message]);
  if (debugEnabled()) process.stderr.write(`${error.stack ?? error.message}\n`);
  else if (typeof (error as { code?: unknown }).code !== 'string') {
    process.stderr.write('lazyrestore: (unexpected error: set LAZYRESTORE_DEBUG=1 for the stack trace)\n');
  }
}

export type Row = readonly [label: string, value: string];
export interface Section {
  title: string;
  rows: Row[];
}

/** Sections with one label column as wide as the widest label of all of them, so values line up. */
export function formatSections(sections: Section[]): string {
  const width = Math.max(0, ...sections.flatMap((s) => s.rows.map(([label]) => label.length)));
  return sections
    .map((s) => [s.title, ...s.rows.map(([label, value]) => `  ${label.padEnd(width)}  ${value}`.trimEnd())].join('\n'))
    .join('\n\n');
}

export function yesNo(value: boolean): string {
  return value ? 'yes' : 'no';
}

export function hex(n: number): string {
  return '0x' + n.toString(16);
}

export function formatBytes(n: number): string {
  if (n >= 1 << 30 && n % (1 << 30) === 0) return `${n / (1 << 30)} GiB`;
  if (n >= 1 << 20 && n % (1 << 20) === 0) return `${n / (1 << 20)} MiB`;
  if (n >= 1 << 10 && n % (1 << 10) === 0) return `${n / (1 << 10)} KiB`;
  return `${n} bytes`;
}
