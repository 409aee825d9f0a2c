import { Command } from 'commander';
import { registerDevCommands } from './commands/dev';
import { exitWithError } from './output';

const program = new Command('durable-compute')
  .description('Neon-style Postgres computes, cache prewarm and fast import as durable Temporal workflows')
  .showHelpAfterError();

registerDevCommands(program);

program.parseAsync(process.argv).catch(exitWithError);
