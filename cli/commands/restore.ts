/**
 * `lazyrestore restore <image> [--eager] [--no-prefetch] [--detach] [--socket PATH | --url URL --token-file F | --data-dir DIR]
 * [--json]`: bring a dumped tree back (daemon/restore). When a daemon answers, it does the restore and serves the
 * lazy memory; this command follows it until the tree runs (--detach) or until every task is complete. Without
 * a daemon this command serves the lazy memory itself, returns once every restored task has all of its memory,
 * and the tree runs on (re-parented) after it exits; --detach is then an error. Either way the summary and the
 * exit status are the same: the time until the tree ran, until it was complete, how the pages arrived.
 */
import type { Argv, CommandModule } from 'yargs';
import { dirname, join } from 'node:path';
import { defaultSocketPath } from '../../api/endpoint.js';
import { Custody } from '../../daemon/custody/index.js';
import { PageService } from '../../daemon/page-service.js';
import { restoreImage } from '../../daemon/restore/index.js';
import { LazyRestoreError } from '../../daemon/errors.js';
import { restoreReport, type RestoreReport } from '../../api/restores.js';
import type { RestoreBody } from '../../api/schemas.js';
import { connectDaemon, DaemonApiError, daemonOptions, type DaemonClient } from '../client.js';
import { formatSections, jsonOption, printJson, type Row } from '../output.js';
import { dataDirOption, formatMiB, reportFailure, withStore } from './images.js';

export { restoreReport, type RestoreReport };

interface RestoreArgs {
  image: string;
  eager: boolean;
  prefetch: boolean;
  detach: boolean;
  'data-dir'?: string;
  socket?: string;
  url?: string;
  'token-file'?: string;
  json: boolean;
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
    ['complete after', r.completeMs === null ? 'not yet (the daemon serves the memory)' : ms(r.completeMs)],
    ['written before running', formatMiB(r.eagerBytes)],
  ];
  if (r.mode === 'lazy' && r.faultPages !== null && r.backgroundPages !== null) {
    rows.push(['pages by fault', String(r.faultPages)], ['pages in background', String(r.backgroundPages)]);
    if (r.cachedBytes !== null && r.cachedBytes > 0) rows.push(['served from memory', formatMiB(r.cachedBytes)]);
  }
  for (const n of r.notes) rows.push(['note', n]);
  for (const e of r.errors) rows.push(['page service error', e]);
  return formatSections([{ title: `Restored ${r.image} as process ${r.rootPid}`, rows }]) + '\n';
}

/** One status line on stderr, rewritten in place; only for people at a terminal. */
function statusLine(enabled: boolean): { show: (r: RestoreBody) => void; clear: () => void } {
  let shown = false;
  return {
    show: (r) => {
      if (!enabled) return;
      const lazy =
        r.state === 'running'
          ? `, ${r.progress.lazyPagesLeft} lazy pages left in ${r.progress.tasks} task${r.progress.tasks === 1 ? '' : 's'}`
          : '';
      process.stderr.write(`\r\x1b[K${r.image}: ${r.state}${lazy}`);
      shown = true;
    },
    clear: () => {
      if (shown) process.stderr.write('\r\x1b[K');
    },
  };
}

const POLL_MS = 50;

/**
 * Through the daemon: start the restore, then follow it until the tree runs (--detach) or until it is complete.
 * A failed restore is its problem, so it is reported as the same failure run here would be.
 */
async function restoreThroughDaemon(api: DaemonClient, args: RestoreArgs): Promise<RestoreReport> {
  const status = statusLine(process.stderr.isTTY === true && !args.json);
  try {
    let r = await api.startRestore({ image: args.image, eager: args.eager, prefetch: args.prefetch });
    for (;;) {
      status.show(r);
      if (r.state === 'failed') throw new DaemonApiError(r.error!);
      if (r.state === 'complete' || (args.detach && r.state === 'running')) return r.report as RestoreReport;
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      r = await api.restoreStatus(r.id);
    }
  } finally {
    status.clear();
  }
}

/** Here: this process serves the lazy memory itself, so it stays until every task is complete. */
async function restoreHere(args: RestoreArgs): Promise<RestoreReport> {
  if (args.detach) {
    throw new LazyRestoreError(
      'INVALID_ARGUMENT',
      '--detach: no daemon to take over the lazy memory (start `lazyrestore daemon`, or restore without --detach)',
    );
  }
  return withStore(args['data-dir'], async (store) => {
    if (args.eager) {
      const tree = await restoreImage(store, args.image, { eager: true });
      return restoreReport(tree, await tree.complete);
    }
    // The uffds go into custody as the daemon's do: if this command dies before the tree is complete, its tasks
    // wait (instead of reading zero pages) until `lazyrestore daemon` starts and takes them over.
    const socketPath = args.socket ?? defaultSocketPath();
    const custody = await Custody.open(join(dirname(socketPath), 'custody'));
    const service = new PageService({ custody: custody.serviceConfig() });
    try {
      const tree = await restoreImage(store, args.image, { pageService: service, background: args.prefetch });
      return restoreReport(tree, await tree.complete);
    } finally {
      await service.close();
      custody.release();
    }
  });
}

export const restoreCommand: CommandModule<object, RestoreArgs> = {
  command: 'restore <image>',
  describe: 'Recreate a dumped process tree; its memory is served on demand until complete',
  builder: (y: Argv) =>
    y.positional('image', { type: 'string', demandOption: true, describe: 'Image name' }).options({
      eager: { type: 'boolean', default: false, describe: 'Write all memory before the tree runs' },
      prefetch: {
        type: 'boolean',
        default: true,
        describe: 'Copy lazy pages in the background (--no-prefetch: only the pages the tasks touch arrive)',
      },
      detach: {
        type: 'boolean',
        default: false,
        describe: 'Return once the tree runs and leave its memory to the daemon (needs a daemon)',
      },
      ...dataDirOption,
      ...daemonOptions,
      ...jsonOption,
    }),
  handler: async (args) => {
    try {
      const api = await connectDaemon(args);
      const report = api === null ? await restoreHere(args) : await restoreThroughDaemon(api, args);
      if (args.json) printJson(report);
      else process.stdout.write(formatRestore(report));
    } catch (e) {
      reportFailure(e, args.json);
    }
  },
};
