/**
 * `lazyrestore restore <image> [--eager] [--data-dir DIR] [--json]`: bring a dumped tree back (daemon/restore).
 * Without a daemon this command serves the lazy memory itself: it returns once every restored task has all of
 * its memory, and the tree runs on (re-parented) after it exits. The summary gives the time until the tree ran,
 * the time until it was complete, and how the pages arrived (faults vs background copy).
 */
import type { Argv, CommandModule } from 'yargs';
import { restoreImage, type RestoreCompletion, type RestoredTree } from '../../daemon/restore/index.js';
import { formatSections, jsonOption, printJson, type Row } from '../output.js';
import { dataDirOption, formatMiB, reportFailure, withStore } from './images.js';

interface RestoreArgs {
  image: string;
  eager: boolean;
  'data-dir'?: string;
  json: boolean;
}

export interface RestoreReport {
  image: string;
  imageId: string;
  rootPid: number;
  processes: RestoredTree['processes'];
  mode: 'lazy' | 'eager';
  runningMs: number;
  completeMs: number;
  eagerBytes: number;
  faultPages: number;
  backgroundPages: number;
  cachedBytes: number;
  notes: string[];
  errors: string[];
}

export function restoreReport(tree: RestoredTree, done: RestoreCompletion): RestoreReport {
  return {
    image: tree.name,
    imageId: tree.imageId,
    rootPid: tree.rootPid,
    processes: tree.processes,
    mode: tree.lazy ? 'lazy' : 'eager',
    runningMs: tree.runningMs,
    completeMs: done.completeMs,
    eagerBytes: tree.eagerBytes,
    faultPages: done.faultPages,
    backgroundPages: done.backgroundPages,
    cachedBytes: done.cachedBytes,
    notes: tree.notes,
    errors: done.errors,
  };
}

function ms(v: number): string {
  return `${v.toFixed(1)} ms`;
}

export function formatRestore(r: RestoreReport): string {
  const threads = r.processes.reduce((n, p) => n + p.threads, 0);
  const rows: Row[] = [
    ['tasks', `${r.processes.length} process${r.processes.length === 1 ? '' : 'es'}, ${threads} threads`],
    ['pids', r.processes.map((p) => String(p.pid)).join(' ')],
    ['mode', r.mode],
    ['running after', ms(r.runningMs)],
    ['complete after', ms(r.completeMs)],
    ['written before running', formatMiB(r.eagerBytes)],
  ];
  if (r.mode === 'lazy') {
    rows.push(['pages by fault', String(r.faultPages)], ['pages in background', String(r.backgroundPages)]);
    if (r.cachedBytes > 0) rows.push(['served from memory', formatMiB(r.cachedBytes)]);
  }
  for (const n of r.notes) rows.push(['note', n]);
  for (const e of r.errors) rows.push(['page service error', e]);
  return formatSections([{ title: `Restored ${r.image} as process ${r.rootPid}`, rows }]) + '\n';
}

export const restoreCommand: CommandModule<object, RestoreArgs> = {
  command: 'restore <image>',
  describe: 'Recreate a dumped process tree; its memory is served on demand until complete',
  builder: (y: Argv) =>
    y.positional('image', { type: 'string', demandOption: true, describe: 'Image name' }).options({
      eager: { type: 'boolean', default: false, describe: 'Write all memory before the tree runs' },
      ...dataDirOption,
      ...jsonOption,
    }),
  handler: async (args) => {
    try {
      const report = await withStore(args['data-dir'], async (store) => {
        const tree = await restoreImage(store, args.image, { eager: args.eager });
        return restoreReport(tree, await tree.complete);
      });
      if (args.json) printJson(report);
      else process.stdout.write(formatRestore(report));
    } catch (e) {
      reportFailure(e, args.json);
    }
  },
};
