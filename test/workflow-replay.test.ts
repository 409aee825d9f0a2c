import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils';
import { Worker } from '@temporalio/worker';
import { describe, expect, it } from 'vitest';
import { WORKFLOWS_PATH } from '../workers/control-plane';
import { replayFixture } from './helpers/history';

const failureConverterPath = fileURLToPath(new URL('../common/codec/failure-converter.cjs', import.meta.url));

/**
 * Replays recorded histories of every workflow through today's workflow code. A change that would
 * break a running compute or import (a reordered or removed step without patched()) fails here
 * with a determinism error. Refresh a fixture with RECORD_HISTORIES=1 and the test that records
 * it (compute-lifecycle, import-workflow, import-dump-restore) after a deliberate, patched change.
 */
describe('workflow replay over recorded histories', () => {
  it.each([
    // A full compute lifecycle: startup steps, reconfigure, stop and the final sync.
    ['compute-lifecycle', ['preparePgdata', 'fetchBasebackup', 'startPostgres', 'applySpec', 'reconfigurePostgres', 'stopPostgres']],
    // A pgdata import from the prefix to the activated timeline.
    ['import-pgdata', ['prepareImportPrefix', 'startPageserverImport', 'claimImportHost', 'dumpSource', 'restoreDump', 'uploadPgdata', 'activateImportedTimeline', 'writeFastImportStatus']],
    // A dump-restore import into a running database.
    ['import-dump-restore', ['prepareImportPrefix', 'claimImportHost', 'checkDumpRestoreEndpoints', 'dumpSource', 'restoreIntoDestination']],
  ] as const)('replays the recorded %s history without a determinism error', async (name, activityTypes) => {
    const history = historyFromJSON(JSON.parse(readFileSync(replayFixture(name), 'utf8')));
    const types = (history.events ?? []).map((e) => e.activityTaskScheduledEventAttributes?.activityType?.name).filter(Boolean);
    // The fixture really is the whole run it claims to be.
    expect(types).toEqual(expect.arrayContaining([...activityTypes]));
    await expect(Worker.runReplayHistory({ workflowsPath: WORKFLOWS_PATH, dataConverter: { failureConverterPath } }, history, `replay-${name}`)).resolves.toBeUndefined();
  });
});
