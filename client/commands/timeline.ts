import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import type { CreateTimelineRequest } from '../../drivers/pageserver';
import { UserFacingError } from '../../common/errors';
import { isNeonId } from '../../model/ids';
import { isLsn } from '../../model/lsn';
import { cliConfig } from '../context';
import { createTimeline } from '../timelines';
import { printJson, printText } from '../output';

export function newNeonId(): string {
  return randomBytes(16).toString('hex');
}

function requireId(value: string | undefined, flag: string): string {
  const id = value ?? newNeonId();
  if (!isNeonId(id)) throw new UserFacingError(`${flag} must be 32 lower-case hex characters, got ${JSON.stringify(id)}`);
  return id;
}

export function registerTimelineCommands(program: Command): void {
  const timeline = program.command('timeline').description("timelines on the pageserver (Neon's management API)");

  timeline
    .command('create')
    .description('create a timeline: a fresh initdb, or a branch of another timeline at an LSN')
    .option('--tenant <id>', 'tenant ID (32 hex; default: a new one)')
    .option('--timeline <id>', 'timeline ID (32 hex; default: a new one)')
    .option('--ancestor-timeline <id>', 'branch from this timeline')
    .option('--ancestor-lsn <lsn>', 'branch point X/Y (default: the ancestor\'s last record)')
    .option('--json', 'print the TimelineInfo JSON')
    .action(async (opts: { tenant?: string; timeline?: string; ancestorTimeline?: string; ancestorLsn?: string; json?: boolean }) => {
      const config = cliConfig();
      const tenantId = requireId(opts.tenant, '--tenant');
      const timelineId = requireId(opts.timeline, '--timeline');
      if (opts.ancestorLsn !== undefined && !isLsn(opts.ancestorLsn)) throw new UserFacingError(`--ancestor-lsn must be X/Y, got ${opts.ancestorLsn}`);
      if (opts.ancestorLsn !== undefined && opts.ancestorTimeline === undefined) throw new UserFacingError('--ancestor-lsn needs --ancestor-timeline');
      const request: CreateTimelineRequest = opts.ancestorTimeline
        ? {
            new_timeline_id: timelineId,
            ancestor_timeline_id: requireId(opts.ancestorTimeline, '--ancestor-timeline'),
            ...(opts.ancestorLsn ? { ancestor_start_lsn: opts.ancestorLsn } : {}),
          }
        : { new_timeline_id: timelineId, pg_version: 15 };
      const info = await createTimeline(config.storage, tenantId, request);
      if (opts.json) printJson(info);
      else printText(`tenant   ${info.tenant_id}\ntimeline ${info.timeline_id}\nlsn      ${info.last_record_lsn}\n`);
    });
}
