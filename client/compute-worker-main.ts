/**
 * The compute-worker bundle's program (dist/compute-worker/compute-worker.cjs): `worker compute`
 * alone, configured from the environment only (a VM has no dev stack to fall back on), so the
 * bundle carries neither the rest of the CLI nor the dev stack.
 */
import { Command } from 'commander';
import { loadConfig } from '../common/config';
import { prettyLogsOnTerminal, quietThirdPartyBanners } from '../common/logger';
import { configureComputeWorkerCommand } from './commands/compute-worker';
import { exitWithError } from './output';

quietThirdPartyBanners();
prettyLogsOnTerminal()
  .then(() => configureComputeWorkerCommand(new Command('compute-worker').showHelpAfterError(), () => loadConfig(process.env)).parseAsync(process.argv))
  .catch(exitWithError);
