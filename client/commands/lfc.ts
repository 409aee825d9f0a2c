import type { Command } from 'commander';
import { UserFacingError } from '../../common/errors';
import type { ComputeClient } from '../compute-client';
import { withComputeClient } from './compute';
import { printJson, printText } from '../output';

interface LfcOptions {
  computeId: string;
  fromEndpoint?: string;
  wait?: boolean;
  json?: boolean;
}

function printState(label: string, state: object, json?: boolean): void {
  if (json) printJson(state);
  else printText(`${label}: ${JSON.stringify(state)}\n`);
}

async function settle(c: ComputeClient, opts: LfcOptions, which: 'prewarm' | 'offload'): Promise<void> {
  const running = which === 'prewarm' ? 'prewarming' : 'offloading';
  const final = await c.waitForLfc(opts.computeId, (s) => s[which].status !== running);
  printState(which, final[which], opts.json);
  if (final[which].status === 'failed') throw new UserFacingError(`${which} failed`);
}

export function registerLfcCommands(program: Command): void {
  const lfc = program.command('lfc').description("cache (LFC) state: offload and prewarm, as compute_ctl's /lfc API");
  const common = (c: Command) => c.requiredOption('--compute-id <id>', 'the compute').option('--json', 'print JSON');

  common(lfc.command('status'))
    .description('prewarm and offload state, with counters')
    .action(async (opts: LfcOptions) => {
      await withComputeClient(async (c) => {
        const s = await c.lfcStatus(opts.computeId);
        if (opts.json) printJson(s);
        else printText(`prewarm: ${JSON.stringify(s.prewarm)}\noffload: ${JSON.stringify(s.offload)}\n`);
      });
    });

  common(lfc.command('prewarm'))
    .description('start a prewarm from the stored state (refused while one runs)')
    .option('--from-endpoint <id>', "prewarm from another endpoint's state on the same timeline")
    .option('--wait', 'wait until it finishes; non-zero exit if it failed')
    .action(async (opts: LfcOptions) => {
      await withComputeClient(async (c) => {
        const accepted = await c.prewarm(opts.computeId, opts.fromEndpoint);
        if (opts.wait) await settle(c, opts, 'prewarm');
        else printState('prewarm', accepted, opts.json);
      });
    });

  common(lfc.command('offload'))
    .description('save the cache state now (refused while one runs)')
    .option('--wait', 'wait until it finishes; non-zero exit if it failed')
    .action(async (opts: LfcOptions) => {
      await withComputeClient(async (c) => {
        const accepted = await c.offload(opts.computeId);
        if (opts.wait) await settle(c, opts, 'offload');
        else printState('offload', accepted, opts.json);
      });
    });

  common(lfc.command('cancel'))
    .description('cancel the running prewarm')
    .action(async (opts: LfcOptions) => {
      await withComputeClient(async (c) => printState('prewarm', await c.cancelPrewarm(opts.computeId), opts.json));
    });
}
