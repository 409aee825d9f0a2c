import type { S3Client } from '@aws-sdk/client-s3';
import { maskSecrets } from '../../common/errors';
import type { PgInstallation } from '../../common/pg-binaries';
import type { DumpRestoreSummary } from '../../model/import-status';
import { hostLocalStep, type ImporterHost } from '../import-control/importer-host';
import { getObjectBytes, joinKey, putJsonObject } from '../../drivers/s3/objects';
import { InvalidImportSpecError, parseImportSpec, specKey, type ImportSpec } from '../../drivers/secrets/import-spec';
import { DecryptionError, KeyUnavailableError, type KeyProviders } from '../../drivers/secrets/key-provider';
import { checkPrefix, checkWorkdir, guarded } from './activities';
import { stepContext } from '../../common/activity-context';
import { detectHostResources, type HostResources } from '../../drivers/importer/bulk-load-settings';
import { dumpPaths } from '../../drivers/importer/dump-restore';
import { nonRetryable } from '../../common/failures';
import { describeEndpoint, userRelations, type Endpoint } from '../../drivers/importer/restore-endpoints';
import { killLeftoverRestores, restoreIntoDestination } from '../../drivers/importer/restore-destination';
import { destroyScratch } from '../../drivers/importer/scratch-postgres';
import { FAST_IMPORT_STATUS_KEY, SPEC_KEY } from '../../drivers/importer/status';
import { killRecordedGroup } from '../../drivers/importer/run-tool';

/**
 * The importer steps of a dump-restore import (Neon fast_import's `dump-restore` command), beside
 * the pgdata steps of activities.ts: check both databases, then (after the shared dumpSource
 * step) restore into the destination, resumably. Both connection strings come from the prefix's
 * spec.json as ciphertext and are decrypted inside the step that needs them; no input, result,
 * heartbeat or error carries them in clear text.
 */
export interface DumpRestoreDeps {
  s3: S3Client;
  bucket: string;
  install: PgInstallation;
  keyProviders: KeyProviders;
  resources?: HostResources;
}

export interface DumpRestoreStepInput {
  workdir: string;
  prefix: string;
  /** Replace the dump's objects the destination already has (pg_restore --clean --if-exists). */
  clean?: boolean;
  jobs?: number;
  /** Tables whose dump data file has this many bytes or more are copied in resumable batches of `batchBytes`. */
  splitTablesLargerThan?: number;
  batchBytes?: number;
}

/** Neon's status/fast_import for this command. */
export interface DumpRestoreStatusObject {
  command: 'dump-restore';
  done: boolean;
  error?: string;
}

const MAX_CONFLICTS_SHOWN = 10;

function positiveOrUndefined(n: unknown): number | undefined {
  return typeof n === 'number' && Number.isFinite(n) && n > 0 ? Math.floor(n) : undefined;
}

export function createDumpRestoreActivities(deps: DumpRestoreDeps) {
  const resources = deps.resources ?? detectHostResources();
  const jobsOf = (jobs?: number) => Math.max(1, Math.floor(jobs ?? resources.cpus));

  async function readSpec(prefix: string): Promise<ImportSpec> {
    const key = joinKey(prefix, SPEC_KEY);
    const bytes = await getObjectBytes(deps.s3, deps.bucket, key, 1024 * 1024);
    if (!bytes) throw nonRetryable('ImportSpecMissing', `No import spec at s3://${deps.bucket}/${key}`);
    try {
      return parseImportSpec(bytes.toString('utf8'), `s3://${deps.bucket}/${key}`);
    } catch (err) {
      if (err instanceof InvalidImportSpecError) throw nonRetryable('InvalidImportSpec', err.message);
      throw err;
    }
  }

  /** Both connection strings in clear text, for this step only. */
  async function endpoints(prefix: string, workdir: string): Promise<{ source: Endpoint; destination: Endpoint }> {
    const spec = await readSpec(prefix);
    if (!spec.destination_connstring_ciphertext_base64) {
      throw nonRetryable('InvalidImportSpec', `The import spec at ${prefix}/${SPEC_KEY} has no destination_connstring_ciphertext_base64: a dump-restore import needs one`);
    }
    const { kind, keyId } = specKey(spec);
    const provider = deps.keyProviders[kind];
    if (!provider) throw nonRetryable('KeyUnavailable', `The import spec is encrypted with a ${kind} key, and this importer has no ${kind} key provider configured`);
    const decrypt = async (ciphertext: string, side: string) => {
      try {
        const text = (await provider.decrypt(Buffer.from(ciphertext, 'base64'), keyId)).toString('utf8');
        if (!/^(postgres(ql)?:\/\/|\s*\w+\s*=)/i.test(text)) throw new DecryptionError(`The decrypted ${side} connection string is neither a postgres:// URL nor key=value conninfo`);
        return text.trim();
      } catch (err) {
        if (err instanceof DecryptionError) throw nonRetryable('DecryptionFailed', err.message);
        if (err instanceof KeyUnavailableError) throw nonRetryable('KeyUnavailable', err.message);
        throw err;
      }
    };
    return {
      source: { side: 'source', connstring: await decrypt(spec.source_connstring_ciphertext_base64, 'source'), workdir },
      destination: { side: 'destination', connstring: await decrypt(spec.destination_connstring_ciphertext_base64, 'destination'), workdir },
    };
  }

  return {
    /**
     * Connects to the source and the destination (an unreachable one is a non-retryable error
     * naming which) and refuses, before anything is written, a destination that already holds a
     * relation of the same schema and name as one of the source's, unless `clean` is set.
     */
    async checkDumpRestoreEndpoints(input: DumpRestoreStepInput): Promise<{ source: string; destination: string; sourceRelations: number; conflicts: string[] }> {
      const workdir = checkWorkdir(input.workdir);
      const prefix = checkPrefix(input.prefix);
      return guarded('checkDumpRestoreEndpoints', async () => {
        const ctx = stepContext();
        const { source, destination } = await endpoints(prefix, workdir);
        const [fromSource, inDestination] = await Promise.all([
          userRelations(deps.install, source, { signal: ctx.signal, permanentIfUnreachable: true }),
          userRelations(deps.install, destination, { signal: ctx.signal, permanentIfUnreachable: true }),
        ]);
        const existing = new Set(inDestination.map((r) => JSON.stringify([r.schema, r.name])));
        const conflicts = fromSource.filter((r) => existing.has(JSON.stringify([r.schema, r.name]))).map((r) => `${r.schema}.${r.name}`);
        if (conflicts.length > 0 && !input.clean) {
          const shown = conflicts.slice(0, MAX_CONFLICTS_SHOWN).join(', ') + (conflicts.length > MAX_CONFLICTS_SHOWN ? ` and ${conflicts.length - MAX_CONFLICTS_SHOWN} more` : '');
          throw nonRetryable(
            'DestinationNotEmpty',
            `the destination database ${describeEndpoint(destination)} already holds ${conflicts.length} relation(s) the source has too: ${shown}. Nothing was written; give --clean to drop and replace them`,
          );
        }
        return { source: describeEndpoint(source), destination: describeEndpoint(destination), sourceRelations: fromSource.length, conflicts };
      });
    },

    /** Restores `<workdir>/dumpdir` into the destination, skipping what an earlier attempt finished. */
    async restoreIntoDestination(input: DumpRestoreStepInput): Promise<DumpRestoreSummary> {
      const workdir = checkWorkdir(input.workdir);
      const prefix = checkPrefix(input.prefix);
      return guarded('restoreIntoDestination', async () => {
        const { destination } = await endpoints(prefix, workdir);
        return restoreIntoDestination({ install: deps.install, workdir, destination: destination.connstring, jobs: jobsOf(input.jobs), clean: Boolean(input.clean), splitTablesLargerThan: positiveOrUndefined(input.splitTablesLargerThan), batchBytes: positiveOrUndefined(input.batchBytes), ctx: stepContext() });
      });
    },

    /** `status/fast_import` = {"command":"dump-restore","done":...}, written in every outcome. */
    async writeDumpRestoreStatus(input: { prefix: string; error?: string }): Promise<DumpRestoreStatusObject> {
      const prefix = checkPrefix(input.prefix);
      return guarded('writeDumpRestoreStatus', async () => {
        const status: DumpRestoreStatusObject = input.error === undefined ? { command: 'dump-restore', done: true } : { command: 'dump-restore', done: false, error: maskSecrets(input.error) };
        await putJsonObject(deps.s3, deps.bucket, joinKey(prefix, FAST_IMPORT_STATUS_KEY), status);
        return status;
      });
    },
  };
}

export type DumpRestoreActivities = ReturnType<typeof createDumpRestoreActivities>;

/**
 * The dump-restore steps on an importer host's own queue: checked to stay in this host's import
 * directories, with the heartbeat pump and a step lease, as the pgdata steps are.
 */
export function createDumpRestoreHostActivities(host: ImporterHost, acts: DumpRestoreActivities, install: PgInstallation) {
  const local = hostLocalStep(host);
  return {
    checkDumpRestoreEndpoints: local(acts.checkDumpRestoreEndpoints),
    restoreIntoDestination: local(acts.restoreIntoDestination),
    /** Stops whatever pg_dump or pg_restore a dead worker left, then removes the directory (and its dump). */
    destroyDumpRestoreWorkdir: local(async (input: { workdir: string }) => {
      await killRecordedGroup(dumpPaths(input.workdir).dumpPidFile);
      await killLeftoverRestores(input.workdir);
      await destroyScratch(install, input.workdir);
    }),
  };
}

export type DumpRestoreHostActivities = ReturnType<typeof createDumpRestoreHostActivities>;
