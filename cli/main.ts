#!/usr/bin/env node
/**
 * The lazyrestore command line. Each command is one module under
 * cli/commands/ exporting a yargs CommandModule; register it below.
 */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { checkCommand } from './commands/check.js';
import { daemonCommand } from './commands/daemon.js';
import { dumpCommand } from './commands/dump.js';
import { imagesCommand } from './commands/images.js';
import { psCommand } from './commands/ps.js';
import { restoreCommand } from './commands/restore.js';
import { CliError, packageVersion, reportError } from './output.js';

export async function main(argv: string[]): Promise<void> {
  await yargs(argv)
    .scriptName('lazyrestore')
    .usage('$0 <command> [options]')
    .command(checkCommand)
    .command(daemonCommand)
    .command(dumpCommand)
    .command(imagesCommand)
    .command(psCommand)
    .command(restoreCommand)
    .demandCommand(1, 'Name a command')
    .strictCommands()
    .strict()
    .version(packageVersion())
    .help()
    .alias('h', 'help')
    .wrap(null)
    .fail((message: string | null, error: Error | undefined) => {
      // Thrown on to main's catch, which also stops yargs from running a
      // command after a usage error (unknown command or option).
      throw error ?? new CliError(`${message ?? 'invalid usage'} (see 'lazyrestore --help')`, 'EUSAGE');
    })
    .parseAsync();
}

main(hideBin(process.argv)).catch(reportError);
