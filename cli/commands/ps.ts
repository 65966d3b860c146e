/**
 * `lazyrestore ps [--json] [--socket S | --url U --token-file F]`: the tasks the page service of a running daemon
 * holds (GET /v1/tasks): restored processes whose memory is still arriving, and the children they forked while
 * it was. A task is one userfaultfd; the API knows it by task id and parent task, not by pid. Without a daemon
 * to ask, a clear message and exit status 1.
 */
import type { Argv, CommandModule } from 'yargs';
import type { TaskListBody } from '../../api/schemas.js';
import { connectDaemon, daemonOptions, DaemonUnreachableError } from '../client.js';
import { failWith, jsonOption, printJson } from '../output.js';

interface PsArgs {
  json: boolean;
  socket?: string;
  url?: string;
  'token-file'?: string;
}

type Task = TaskListBody['tasks'][number];

const COLUMNS = [
  'TASK',
  'PID',
  'PARENT',
  'LAZY PAGES',
  'FAULTS',
  'COPIED',
  'ZEROED',
  'FORK',
  'REMAP',
  'REMOVE',
  'UNMAP',
];

/** The tasks as an aligned table, one line per task, parents before their children (by task id). */
export function formatTasks(tasks: Task[]): string {
  const rows = [...tasks]
    .sort((a, b) => a.task - b.task)
    .map((t) =>
      [
        t.task,
        t.pid ?? '-',
        t.parent ?? '-',
        t.lazyPages,
        t.faults,
        t.pagesCopied,
        t.pagesZeroed,
        t.events.fork,
        t.events.remap,
        t.events.remove,
        t.events.unmap,
      ].map(String),
    );
  const widths = COLUMNS.map((c, i) => Math.max(c.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)));
  return [line(COLUMNS), ...rows.map(line)].map((cells) => cells.join('  ').trimEnd()).join('\n');
}

async function run(args: PsArgs): Promise<void> {
  let why = 'none answers at the default socket';
  const client = await connectDaemon(args).catch((e: unknown) => {
    if (!(e instanceof DaemonUnreachableError)) throw e;
    why = e.message;
    return null;
  });
  if (client === null) {
    failWith([`no lazyrestore daemon to ask (${why}); start one with \`lazyrestore daemon\` or name it with --socket`]);
    return;
  }
  const tasks = await client.tasks();
  if (args.json) printJson({ tasks });
  else if (tasks.length === 0) process.stdout.write('No task is served: every restored process has all its memory.\n');
  else process.stdout.write(formatTasks(tasks) + '\n');
}

export const psCommand: CommandModule<object, PsArgs> = {
  command: 'ps',
  describe: 'List the tasks the page service of the running daemon serves',
  builder: (y: Argv) => y.options({ ...jsonOption, ...daemonOptions }),
  handler: run,
};
