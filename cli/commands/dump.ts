/**
 * `lazyrestore dump <pid> [--name NAME] [--leave-running] [--socket PATH | --url URL --token-file F |
 * --data-dir DIR] [--json]`: checkpoint the process tree rooted at <pid> into the image store (daemon/dump),
 * through the daemon when one answers (cli/client.ts connectDaemon), else here. On a terminal a local dump shows
 * a progress bar on stderr counting the pages written; the result is a summary for people, or one JSON document
 * with --json, the same whichever process did the dump.
 */
import cliProgress from 'cli-progress';
import type { Argv, CommandModule } from 'yargs';
import { dump, type DumpProgress, type DumpResult } from '../../daemon/dump/index.js';
import { connectDaemon, daemonOptions, type DaemonClient } from '../client.js';
import { formatSections, jsonOption, printJson } from '../output.js';
import { dataDirOption, formatMiB, reportFailure, withStore } from './images.js';

interface DumpArgs {
  pid: number;
  name?: string;
  'leave-running': boolean;
  'data-dir'?: string;
  socket?: string;
  url?: string;
  'token-file'?: string;
  json: boolean;
}

/** A progress bar of pages written, on stderr; only for people at a terminal. */
function progressBar(enabled: boolean): { update: (p: DumpProgress) => void; stop: () => void } {
  if (!enabled) return { update: () => undefined, stop: () => undefined };
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: '{phase} [{bar}] {percentage}% | {value}/{total} pages',
      hideCursor: true,
      clearOnComplete: true,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    update: (p) => {
      if (!started) {
        bar.start(Math.max(p.pagesTotal, 1), 0, { phase: p.phase.padEnd(10) });
        started = true;
      }
      bar.setTotal(Math.max(p.pagesTotal, 1));
      // --leave-running reads everything while the tree is frozen, then writes: show each in turn.
      bar.update(p.phase === 'reading' ? p.pagesRead : p.pagesWritten, { phase: p.phase.padEnd(10) });
    },
    stop: () => {
      if (started) bar.stop();
    },
  };
}

function ms(v: number): string {
  return `${v.toFixed(1)} ms`;
}

export function formatDump(r: DumpResult): string {
  const s = r.summary;
  const ratio = r.dedupRatio === null ? 'all shared' : `${r.dedupRatio.toFixed(2)}x`;
  return (
    formatSections([
      {
        title: `Dumped process ${r.rootPid} as ${r.name}`,
        rows: [
          ['tasks', `${r.processes} process${r.processes === 1 ? '' : 'es'}, ${r.threads} threads`],
          ['VMAs', String(r.vmas)],
          ['pages', `${r.pagesDumped} (${s.pages} with data, ${s.zeroPages} zero)`],
          ['page data', formatMiB(r.bytes)],
          ['bytes stored', `${formatMiB(r.bytesStored)} (dedup ratio ${ratio})`],
          ['frozen for', ms(r.frozenMs)],
          ['dump took', ms(r.totalMs)],
          ...(r.leftRunning
            ? ([['left running', `yes (store writes after release: ${ms(r.writeAfterReleaseMs)})`]] as const)
            : ([['left running', 'no (the tree was killed)']] as const)),
        ],
      },
    ]) + '\n'
  );
}

/**
 * The daemon runs the dump and answers when it is committed (no progress bar: the request waits). Its answer is
 * the local result plus the job id, which is left out so that the output is the same either way.
 */
async function dumpThroughDaemon(api: DaemonClient, args: DumpArgs): Promise<DumpResult> {
  const { job: _job, ...result } = await api.dump({
    pid: args.pid,
    ...(args.name === undefined ? {} : { name: args.name }),
    leaveRunning: args['leave-running'],
  });
  return result;
}

export const dumpCommand: CommandModule<object, DumpArgs> = {
  command: 'dump <pid>',
  describe: 'Checkpoint the process tree rooted at <pid> into the image store',
  builder: (y: Argv) =>
    y.positional('pid', { type: 'number', demandOption: true, describe: 'Root of the tree to dump' }).options({
      name: { type: 'string', describe: 'Image name (default: <comm>-<pid>-<yyyymmddThhmmss>, UTC)' },
      'leave-running': {
        type: 'boolean',
        default: false,
        describe: 'Resume the tree after the dump instead of killing it',
      },
      ...dataDirOption,
      ...daemonOptions,
      ...jsonOption,
    }),
  handler: async (args) => {
    const bar = progressBar(process.stderr.isTTY === true && !args.json);
    try {
      const api = await connectDaemon(args);
      const result =
        api === null
          ? await withStore(args['data-dir'], (store) =>
              dump(store, args.pid, { name: args.name, leaveRunning: args['leave-running'], onProgress: bar.update }),
            )
          : await dumpThroughDaemon(api, args);
      bar.stop();
      if (args.json) printJson(result);
      else process.stdout.write(formatDump(result));
    } catch (e) {
      bar.stop();
      reportFailure(e, args.json);
    }
  },
};
