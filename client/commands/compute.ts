import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { UserFacingError } from '../../common/errors';
import type { ComputeStatusResponse, TerminateMode } from '../../model/compute-status';
import { ComputeClient } from '../compute-client';
import { cliConfig, openClient } from '../context';
import { printJson, printText } from '../output';

/** Reads a spec file ('-' = stdin) as JSON, naming the file in any error. */
export function readSpecFile(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (err) {
    throw new UserFacingError(`cannot read spec file ${file}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UserFacingError(`spec file ${file} is not valid JSON: ${(err as Error).message}`);
  }
}

export async function withComputeClient<T>(fn: (c: ComputeClient) => Promise<T>): Promise<T> {
  const config = cliConfig();
  const { client, close } = await openClient(config);
  try {
    return await fn(new ComputeClient(client, config.temporal.controlPlaneTaskQueue, config.specTrust));
  } finally {
    await close();
  }
}

function printStatus(s: ComputeStatusResponse): void {
  const lines = [
    `compute:     ${s.compute_id}`,
    `status:      ${s.status}`,
    `tenant:      ${s.tenant ?? '-'}`,
    `timeline:    ${s.timeline ?? '-'}`,
    `started:     ${s.start_time}`,
    `last active: ${s.last_active ?? '-'}`,
    `start LSN:   ${s.start_lsn ?? '-'}`,
  ];
  if (s.terminate_lsn) lines.push(`end LSN:     ${s.terminate_lsn}`);
  if (s.error) lines.push(`error:       ${s.error}`);
  if (s.replication) lines.push(`replay:      ${s.replication.replay_lsn ?? '-'} (safekeepers' commit ${s.replication.commit_lsn ?? '-'}, lag ${s.replication.lag_bytes ?? '?'} bytes at ${s.replication.measured_at})`);
  if (s.metrics.total_startup_ms) lines.push(`startup:     ${s.metrics.total_startup_ms} ms (basebackup ${s.metrics.basebackup_ms} ms, ${s.metrics.basebackup_bytes} bytes)`);
  printText(`${lines.join('\n')}\n`);
}

export function registerComputeCommands(program: Command): void {
  const compute = program.command('compute').description('compute lifecycle workflows (compute_ctl)');

  compute
    .command('start')
    .description('start a compute from a compute_ctl spec (ComputeConfig or bare ComputeSpec JSON)')
    .requiredOption('--compute-id <id>', 'the compute ID')
    .option('--spec <file>', "spec file ('-' for stdin); without it the compute starts empty and waits for configure")
    .option('--wait', 'exit 0 once running, non-zero with the error once failed')
    .option('--json', 'print the status as JSON')
    .action(async (opts: { computeId: string; spec?: string; wait?: boolean; json?: boolean }) => {
      const spec = opts.spec ? readSpecFile(opts.spec) : undefined;
      await withComputeClient(async (c) => {
        let status;
        if (opts.wait && spec !== undefined) status = await c.startAndAwaitRunning(opts.computeId, spec);
        else {
          await c.start(opts.computeId, spec);
          status = opts.wait ? await c.waitForRunning(opts.computeId) : await c.status(opts.computeId);
        }
        if (opts.json) printJson(status);
        else printStatus(status);
      });
    });

  compute
    .command('status')
    .requiredOption('--compute-id <id>', 'the compute ID')
    .option('--json', 'print JSON')
    .action(async (opts: { computeId: string; json?: boolean }) => {
      await withComputeClient(async (c) => {
        const status = await c.status(opts.computeId);
        if (opts.json) printJson(status);
        else printStatus(status);
      });
    });

  compute
    .command('configure')
    .description('reconfigure a running compute, or configure one waiting in empty; waits for the result')
    .requiredOption('--compute-id <id>', 'the compute ID')
    .requiredOption('--spec <file>', "spec file ('-' for stdin)")
    .option('--json', 'print JSON')
    .action(async (opts: { computeId: string; spec: string; json?: boolean }) => {
      const spec = readSpecFile(opts.spec);
      await withComputeClient(async (c) => {
        const status = await c.configure(opts.computeId, spec);
        if (opts.json) printJson(status);
        else printStatus(status);
        if (status.status === 'failed') throw new UserFacingError(`configure failed: ${status.error}`);
      });
    });

  compute
    .command('terminate')
    .requiredOption('--compute-id <id>', 'the compute ID')
    .option('--mode <mode>', 'fast (smart/fast shutdown) or immediate', 'fast')
    .option('--json', 'print JSON')
    .action(async (opts: { computeId: string; mode: string; json?: boolean }) => {
      if (opts.mode !== 'fast' && opts.mode !== 'immediate') throw new UserFacingError(`--mode must be fast or immediate, got ${opts.mode}`);
      await withComputeClient(async (c) => {
        const result = await c.terminate(opts.computeId, opts.mode as TerminateMode);
        if (opts.json) printJson(result);
        else printText(`terminated; safekeepers synced at ${result.lsn ?? '(no sync: not a primary)'}\n`);
      });
    });

  compute
    .command('promote')
    .description("compute_ctl's /promote: a Replica becomes the primary of its timeline")
    .requiredOption('--compute-id <id>', 'the replica compute ID')
    .option('--safekeepers-lsn <lsn>', "wait until the replica replayed this LSN (the old primary's terminate LSN); default: the safekeepers' commit LSN")
    .option('--spec <file>', "the primary's spec (JSON, '-' for stdin); default: the replica's spec in mode Primary")
    .option('--json', 'print JSON')
    .action(async (opts: { computeId: string; safekeepersLsn?: string; spec?: string; json?: boolean }) => {
      if (opts.safekeepersLsn !== undefined && !/^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/.test(opts.safekeepersLsn)) {
        throw new UserFacingError(`--safekeepers-lsn must look like 0/16B5A50, got ${opts.safekeepersLsn}`);
      }
      await withComputeClient(async (c) => {
        const state = await c.promote(opts.computeId, {
          ...(opts.safekeepersLsn !== undefined ? { safekeepersLsn: opts.safekeepersLsn } : {}),
          ...(opts.spec !== undefined ? { spec: readSpecFile(opts.spec) } : {}),
        });
        if (opts.json) printJson(state);
        else if (state.status === 'completed') printText(`promoted at ${state.lsn}: waited ${state.lsn_wait_time_ms} ms for replay, ${state.pg_promote_time_ms} ms to restart as the primary\n`);
        else printText(`promote ${state.status}\n`);
      });
    });

  compute
    .command('vm-lost')
    .description("for the VM platform: the compute's VM is gone; the compute fails at once with the reason")
    .requiredOption('--compute-id <id>', 'the compute ID')
    .requiredOption('--reason <text>', 'what happened to the VM (kept in the status error)')
    .action(async (opts: { computeId: string; reason: string }) => {
      await withComputeClient(async (c) => {
        await c.vmLost(opts.computeId, opts.reason);
        process.stdout.write(`reported VM lost for compute ${opts.computeId}\n`);
      });
    });

  compute
    .command('list')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      await withComputeClient(async (c) => {
        const entries = await c.list();
        if (opts.json) {
          printJson(entries);
          return;
        }
        for (const e of entries) {
          printText(`${e.computeId.padEnd(24)} ${e.status.padEnd(30)} ${e.tenant ?? '-'}/${e.timeline ?? '-'}  ${e.startTime}\n`);
        }
      });
    });
}
