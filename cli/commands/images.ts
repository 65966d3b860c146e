/**
 * `lazyrestore images ls | inspect NAME | rm NAME [--json] [--data-dir DIR]`: the images in the store.
 * They go through the daemon when one answers (cli/client.ts connectDaemon: --socket, --url, or the default
 * socket), else open the store themselves (--data-dir names one to open here). Also the store plumbing `dump`
 * shares: the --data-dir option, opening the store with a clear error, and printing a failure with its stable
 * code.
 */
import type { Argv, CommandModule } from 'yargs';
import { defaultDataDir } from '../../daemon/dump/defaults.js';
import { LazyRestoreError, type Problem } from '../../daemon/errors.js';
import { ImageStore, isStoreError, type ImageSummary, type LoadedImage } from '../../daemon/store/index.js';
import { connectDaemon, daemonOptions, type DaemonClient } from '../client.js';
import { failWith, formatSections, jsonOption, printJson, type Row, type Section } from '../output.js';

export const dataDirOption = {
  'data-dir': {
    type: 'string',
    describe: 'Image store directory (default: $LAZYRESTORE_DATA_DIR, else /var/lib/lazyrestore for root)',
  },
} as const;

/** Opens the store; a directory that cannot be created, opened or written is DATA_DIR_UNWRITABLE. */
export async function openStore(dataDir: string | undefined): Promise<ImageStore> {
  const dir = defaultDataDir(dataDir);
  try {
    return await ImageStore.open(dir);
  } catch (e) {
    const unusable = isStoreError(e) && (e.code.startsWith('E') || e.code === 'STORE_OPEN_FAILED');
    if (!unusable) throw e;
    throw new LazyRestoreError('DATA_DIR_UNWRITABLE', `cannot use data directory ${dir}: ${e.message}`, { cause: e });
  }
}

/** Runs `fn` with the store open, and closes it whatever happens. */
export async function withStore<T>(dataDir: string | undefined, fn: (store: ImageStore) => Promise<T>): Promise<T> {
  const store = await openStore(dataDir);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

function codeOf(e: unknown): string | undefined {
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}

/**
 * Reports a failure with its code: `lazyrestore: <message> (<CODE>)` on stderr (a line per refusal when there
 * are several), and with --json also one
 * document `{ "error": { code, message, problems? } }` on stdout. Errors without a code are rethrown for
 * main's generic report.
 */
export function reportFailure(e: unknown, json: boolean): void {
  const code = codeOf(e);
  if (code === undefined || !(e instanceof Error)) throw e;
  const problems = (e as { problems?: Problem[] }).problems;
  if (json) printJson({ error: { code, message: e.message, ...(problems === undefined ? {} : { problems }) } });
  // One line per refusal, each with its own code; otherwise the message with the code on its first line.
  if (problems !== undefined && problems.length > 0) failWith(problems.map((p) => `${p.message} (${p.code})`));
  else failWith(e.message.split('\n').map((line, i) => (i === 0 ? `${line} (${code})` : line)));
}

export function formatMiB(bytes: number): string {
  return `${(bytes / (1 << 20)).toFixed(1)} MiB`;
}

interface ImagesArgs {
  json: boolean;
  'data-dir'?: string;
  socket?: string;
  url?: string;
  'token-file'?: string;
}

/** Runs `local` on the store opened here, or `remote` through the daemon when one answers (connectDaemon). */
async function either<T>(
  args: ImagesArgs,
  remote: (api: DaemonClient) => Promise<T>,
  local: (store: ImageStore) => Promise<T>,
): Promise<T> {
  const api = await connectDaemon(args);
  return api === null ? withStore(args['data-dir'], local) : remote(api);
}

interface NameArgs extends ImagesArgs {
  name: string;
}

function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}

function infoField(s: ImageSummary, key: string): string {
  const v = s.info[key];
  return typeof v === 'string' || typeof v === 'number' ? String(v) : '-';
}

export function formatList(images: ImageSummary[]): string {
  if (images.length === 0) return 'No images.\n';
  const rows = images.map((s) => [
    s.name,
    s.committedAt.replace(/\.\d+Z$/, 'Z'),
    infoField(s, 'rootPid'),
    infoField(s, 'comm'),
    String(s.pages),
    formatMiB(s.bytes),
    formatMiB(s.newBytes),
  ]);
  return table(['NAME', 'CREATED', 'PID', 'COMMAND', 'PAGES', 'DATA', 'ADDED'], rows);
}

interface TreeMeta {
  processes: Array<{ pid: number; ppid: number; tids: number[]; state: string }>;
}

/** The summary and the tree of an image, as sections for people. */
export function formatInspect(img: LoadedImage): string {
  const s = img.summary;
  const tree = img.meta.get('tree') as TreeMeta | undefined;
  const image = img.meta.get('image') as { frozenMs?: number; kernel?: { release: string } } | undefined;
  const overview: Section = {
    title: `Image ${s.name}`,
    rows: [
      ['id', s.id],
      ['created', s.createdAt],
      ['committed', s.committedAt],
      ['kernel', image?.kernel?.release ?? '-'],
      ['frozen for', image?.frozenMs === undefined ? '-' : `${image.frozenMs.toFixed(1)} ms`],
      ['pages', `${s.pages} with data, ${s.zeroPages} zero`],
      ['page data', formatMiB(s.bytes)],
      ['added to the store', `${formatMiB(s.newBytes)} (shared ${(s.sharedFraction * 100).toFixed(1)}%)`],
    ],
  };
  const processes: Section = {
    title: 'Processes',
    rows: (tree?.processes ?? []).map((p): Row => {
      const rec = img.meta.get(`process/${p.pid}`) as { comm?: string; vmas?: unknown[]; fds?: unknown[] } | undefined;
      const detail = `${rec?.comm ?? '?'}  ppid ${p.ppid}  ${p.state}  threads ${p.tids.length}`;
      return [String(p.pid), `${detail}  vmas ${rec?.vmas?.length ?? 0}  fds ${rec?.fds?.length ?? 0}`];
    }),
  };
  const spaces: Section = {
    title: 'Address spaces',
    rows: s.addressSpaces.map((a): Row => [a.mmId, `${a.pages} pages, ${a.zeroPages} zero, ${formatMiB(a.bytes)}`]),
  };
  return formatSections([overview, processes, spaces]) + '\n';
}

/** `inspect --json`: the summary and every metadata record, as stored. */
function inspectJson(img: LoadedImage): unknown {
  const meta: Record<string, unknown> = {};
  for (const [key, value] of img.meta) meta[key] = value;
  return { name: img.name, id: img.id, summary: img.summary, meta };
}

const lsCommand: CommandModule<object, ImagesArgs> = {
  command: 'ls',
  describe: 'List the images in the store',
  builder: (y: Argv) => y.options({ ...jsonOption, ...dataDirOption, ...daemonOptions }),
  handler: async (args) => {
    try {
      const images = await either(
        args,
        async (api) => (await api.listImages()) as ImageSummary[],
        (store) => store.list(),
      );
      if (args.json) printJson(images);
      else process.stdout.write(formatList(images));
    } catch (e) {
      reportFailure(e, args.json);
    }
  },
};

const inspectCommand: CommandModule<object, NameArgs> = {
  command: 'inspect <name>',
  describe: 'Show an image: summary, processes, address spaces (--json: every metadata record)',
  builder: (y: Argv) =>
    y
      .positional('name', { type: 'string', demandOption: true, describe: 'Image name' })
      .options({ ...jsonOption, ...dataDirOption, ...daemonOptions }),
  handler: async (args) => {
    try {
      const img = await either(
        args,
        async (api): Promise<LoadedImage> => {
          const d = await api.inspectImage(args.name);
          return { name: d.name, id: d.id, summary: d.summary, meta: new Map(Object.entries(d.meta)) };
        },
        (store) => store.loadImage(args.name),
      );
      if (args.json) printJson(inspectJson(img));
      else process.stdout.write(formatInspect(img));
    } catch (e) {
      reportFailure(e, args.json);
    }
  },
};

const rmCommand: CommandModule<object, NameArgs> = {
  command: 'rm <name>',
  describe: 'Remove an image (page data other images share stays)',
  builder: (y: Argv) =>
    y
      .positional('name', { type: 'string', demandOption: true, describe: 'Image name' })
      .options({ ...jsonOption, ...dataDirOption, ...daemonOptions }),
  handler: async (args) => {
    try {
      const r = await either(
        args,
        (api) => api.removeImage(args.name),
        (store) => store.remove(args.name),
      );
      if (args.json) printJson(r);
      else
        process.stdout.write(
          `Removed ${r.name}: freed ${r.freedChunks} chunks (${formatMiB(r.freedBytes)}), ` +
            `${r.keptChunks} still used by other images.\n`,
        );
    } catch (e) {
      reportFailure(e, args.json);
    }
  },
};

export const imagesCommand: CommandModule = {
  command: 'images <command>',
  describe: 'List, inspect and remove images',
  builder: (y: Argv) =>
    y.command(lsCommand).command(inspectCommand).command(rmCommand).demandCommand(1, 'Name a subcommand'),
  handler: () => undefined,
};
