import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils';
import { Worker } from '@temporalio/worker';
import { describe, expect, it } from 'vitest';
import { WORKFLOWS_PATH } from '../workers/control-plane';
import { REPLAY_FIXTURE } from './helpers/history';

const failureConverterPath = fileURLToPath(new URL('../common/codec/failure-converter.cjs', import.meta.url));

/**
 * Replays a recorded history of a full compute lifecycle through today's workflow code. A change
 * that would break running computes (a reordered or removed step without patched()) fails here
 * with a determinism error. Refresh the fixture with RECORD_HISTORIES=1 after a deliberate,
 * patched change.
 */
describe('compute workflow replay', () => {
  it('replays the recorded lifecycle history without a determinism error', async () => {
    const history = historyFromJSON(JSON.parse(readFileSync(REPLAY_FIXTURE, 'utf8')));
    const types = (history.events ?? []).map((e) => e.activityTaskScheduledEventAttributes?.activityType?.name).filter(Boolean);
    // The fixture really is a full lifecycle: startup steps, reconfigure, stop and the final sync.
    expect(types).toEqual(expect.arrayContaining(['preparePgdata', 'fetchBasebackup', 'startPostgres', 'applySpec', 'reconfigurePostgres', 'stopPostgres']));
    await expect(Worker.runReplayHistory({ workflowsPath: WORKFLOWS_PATH, dataConverter: { failureConverterPath } }, history, 'compute-replay')).resolves.toBeUndefined();
  });
});
