import { Command } from 'commander';
import { registerCodecServerCommand } from './commands/codec-server';
import { registerComputeCommands } from './commands/compute';
import { registerDevCommands } from './commands/dev';
import { registerImportCommands } from './commands/import';
import { registerLfcCommands } from './commands/lfc';
import { registerMainCommand } from './commands/main';
import { registerTimelineCommands } from './commands/timeline';
import { registerWorkerCommands } from './commands/worker';
import { exitWithError } from './output';
import { maskConsole } from '../workers/masked-logging';
import { prettyLogsOnTerminal, quietThirdPartyBanners } from '../common/logger';

// Whatever any command logs (workers, the import callback server) is masked too.
maskConsole();

const program = new Command('durable-compute')
  .description('Neon-style Postgres computes, cache prewarm and fast import as durable Temporal workflows')
  .showHelpAfterError();

registerDevCommands(program);
registerComputeCommands(program);
registerWorkerCommands(program);
registerTimelineCommands(program);
registerImportCommands(program);
registerMainCommand(program);
registerLfcCommands(program);
registerCodecServerCommand(program);

// Log lines (workers, servers) are JSON unless a person watches the terminal.
quietThirdPartyBanners();
prettyLogsOnTerminal()
  .then(() => program.parseAsync(process.argv))
  .catch(exitWithError);
