/**
 * `lazyrestore daemon [--socket PATH] [--data-dir DIR] [--listen HOST:PORT --token-file F] [--group G]`: runs
 * the page service, the image store and the REST API (daemon/service.ts) until SIGTERM or SIGINT. Logs are
 * JSON lines on stdout; a failure to start is one `lazyrestore: <message> (<CODE>)` line on stderr, exit 1.
 */
import type { Argv, CommandModule } from 'yargs';
import { reportFailure } from './images.js';

interface DaemonArgs {
  socket?: string;
  'data-dir'?: string;
  listen?: string;
  'token-file'?: string;
  group?: string;
  'log-level': string;
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export const daemonCommand: CommandModule<object, DaemonArgs> = {
  command: 'daemon',
  describe: 'Run the lazyrestore daemon: image store, lazy page service and REST API',
  builder: (y: Argv) =>
    y.options({
      socket: {
        type: 'string',
        describe: 'API unix socket (default: $LAZYRESTORE_SOCKET, else /run/lazyrestore/api.sock for root)',
      },
      'data-dir': {
        type: 'string',
        describe: 'Image store directory (default: $LAZYRESTORE_DATA_DIR, else /var/lib/lazyrestore for root)',
      },
      listen: { type: 'string', describe: 'Also listen on TCP HOST:PORT (needs --token-file)' },
      'token-file': { type: 'string', describe: 'File with the bearer token TCP clients must send (mode 0600)' },
      group: {
        type: 'string',
        describe: 'Let this group use the socket too (mode 0660): its members become root-equivalent',
      },
      'log-level': { type: 'string', choices: LOG_LEVELS, default: 'info', describe: 'Level of the JSON log' },
    }),
  handler: async (args) => {
    // Loaded here so that other commands do not pay for fastify.
    const { startDaemon, stopOnSignals } = await import('../../daemon/service.js');
    try {
      const daemon = await startDaemon({
        socketPath: args.socket,
        dataDir: args['data-dir'],
        listen: args.listen,
        tokenFile: args['token-file'],
        group: args.group,
        logLevel: args['log-level'],
      });
      await stopOnSignals(daemon);
    } catch (e) {
      reportFailure(e, false);
    }
  },
};
