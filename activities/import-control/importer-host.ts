import { createFileOnceSync } from '../../common/atomic-write';
import { createHash, randomUUID } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { asyncLocalStorage, type Context } from '@temporalio/activity';
import type { ImporterActivities } from '../importer/activities';
import { dumpPaths } from '../../drivers/importer/dump-restore';
import { killRecordedGroup } from '../../drivers/importer/run-tool';
import { importerHostTaskQueue, isValidImportId, isValidImporterHostId } from '../../model/import-status';
import { MAX_WORKDIR_ROOT_BYTES } from '../../common/paths';
import { holdStepLease } from '../../common/step-leases';
import { every } from '../../common/activity-context';
import { nonRetryable } from '../../common/failures';

/**
 * What makes an importer worker a *host*: an identity tied to its local disk, its own task queue,
 * and the working directories of the imports it runs. The import workflow claims a host once per
 * local run (on the shared queue) and sends every later step to that host's queue, because the
 * dump and the scratch data directory exist only there.
 */

export interface ImporterHost {
  hostId: string;
  taskQueue: string;
  /** The pool's queue this host claims new local runs from. */
  sharedTaskQueue: string;
  workdirRoot: string;
}

/**
 * The host's identity: configured, or generated once and kept in `<workdirRoot>/host-id`. A
 * worker restarted on the same disk is the same host (its half-done dumps are still there); a
 * new disk is a new host.
 */
export { MAX_WORKDIR_ROOT_BYTES };

export function resolveImporterHost(workdirRoot: string, sharedTaskQueue: string, configuredHostId?: string): ImporterHost {
  if (!path.isAbsolute(workdirRoot)) throw new Error(`The importer work directory must be absolute, got ${workdirRoot}`);
  if (Buffer.byteLength(path.normalize(workdirRoot)) > MAX_WORKDIR_ROOT_BYTES) {
    throw new Error(
      `The importer work directory ${workdirRoot} is too long (${Buffer.byteLength(workdirRoot)} bytes, at most ${MAX_WORKDIR_ROOT_BYTES}): ` +
        'the scratch Postgres unix sockets below it must fit in 107 bytes. Choose a shorter DURABLE_COMPUTE_IMPORTER_WORKDIR.',
    );
  }
  mkdirSync(workdirRoot, { recursive: true, mode: 0o755 });
  // The scratch Postgres runs as an unprivileged user when we are root; it must reach its workdir.
  chmodSync(workdirRoot, 0o755);
  let hostId = configuredHostId;
  if (!hostId) {
    const file = path.join(workdirRoot, 'host-id');
    if (!existsSync(file)) {
      const short = os.hostname().replace(/[^A-Za-z0-9_.-]/g, '-').slice(0, 40) || 'host';
      createFileOnceSync(file, `${short}-${randomUUID().slice(0, 8)}\n`, { mode: 0o644 });
    }
    hostId = readFileSync(file, 'utf8').trim();
  }
  if (!isValidImporterHostId(hostId)) throw new Error(`Invalid importer host id ${JSON.stringify(hostId)}: use 1-100 letters, digits, . _ -`);
  return { hostId, taskQueue: importerHostTaskQueue(sharedTaskQueue, hostId), sharedTaskQueue, workdirRoot: path.normalize(workdirRoot) };
}

/**
 * One import's working directory on this host for one local run. Short (the scratch server's
 * socket path below it must fit in 107 bytes) but still recognisable.
 */
export function importWorkdir(host: ImporterHost, importId: string, run: string): string {
  const hash = createHash('sha256').update(`${importId}\0${run}`).digest('hex').slice(0, 10);
  return path.join(host.workdirRoot, `${importId.slice(0, 16)}-${hash}`);
}

/** How often the wrapper re-sends the step's last progress, so a dead worker is noticed within seconds. */
const HEARTBEAT_PUMP_MS = 2_000;

/**
 * Runs `fn` with a heartbeat every couple of seconds carrying the step's latest progress. The
 * importer steps heartbeat their own progress only every 5-10 s; the pump lets the workflow use a
 * short heartbeat timeout without changing them. Before the step reports anything, the previous
 * attempt's details are re-sent, so a kill in between never erases the resume point.
 */
export async function withHeartbeatPump<T>(fn: () => Promise<T>): Promise<T> {
  const ctx = asyncLocalStorage.getStore();
  if (!ctx) return fn();
  let last: unknown = ctx.info.heartbeatDetails;
  const send = (details: unknown) => {
    last = details;
    ctx.heartbeat(details);
  };
  const proxy = new Proxy(ctx, {
    get(target, prop) {
      if (prop === 'heartbeat') return send;
      const value = Reflect.get(target, prop, target) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  }) as Context;
  ctx.heartbeat(last);
  const stopBeating = every(HEARTBEAT_PUMP_MS, () => ctx.heartbeat(last));
  try {
    return await asyncLocalStorage.run(proxy, fn);
  } finally {
    stopBeating();
  }
}

export function insideRoot(host: ImporterHost, workdir: unknown): string {
  if (typeof workdir !== 'string' || path.normalize(workdir) !== workdir || path.dirname(workdir) !== host.workdirRoot) {
    // A workflow input must never make a host remove or write outside its own import directories.
    throw nonRetryable('InvalidInput', `Work directory ${JSON.stringify(workdir)} is not an import directory of host ${host.hostId}`);
  }
  return workdir;
}

/** The shared queue's activities: claiming a host for a local run. */
export function createImporterClaimActivities(host: ImporterHost) {
  return {
    /**
     * `runKey` names the workflow run: a new run of the same import ID (after a failure) gets a
     * new directory, so it never picks up a dump of the run before.
     */
    async claimImportHost(input: { importId: string; localRun: number; runKey: string }): Promise<{ hostId: string; taskQueue: string; workdir: string }> {
      if (!isValidImportId(input.importId) || !Number.isInteger(input.localRun) || input.localRun < 1 || !/^[A-Za-z0-9-]{1,64}$/.test(input.runKey)) {
        throw nonRetryable('InvalidInput', `Invalid claim ${JSON.stringify(input)}`);
      }
      const workdir = importWorkdir(host, input.importId, `${input.runKey}/${input.localRun}`);
      return { hostId: host.hostId, taskQueue: host.taskQueue, workdir };
    },
  };
}

/**
 * The host queue's activities: the importer steps, each checked to work inside this host's
 * directories, run with the heartbeat pump, and under a step lease (so a restarted worker can
 * hand a dead one's attempt back at once, see step-leases.ts). Names are the importer's own.
 */
/**
 * Wraps one of a host's local steps: its working directory checked to be inside this host's root,
 * the heartbeat pump, and a step lease for the attempt. Both import modes' host steps use it.
 */
export function hostLocalStep(host: ImporterHost) {
  return <I extends { workdir: string }, R>(fn: (input: I) => Promise<R>) =>
    async (input: I): Promise<R> => {
      const workdir = insideRoot(host, input?.workdir);
      const release = holdStepLease(host.workdirRoot, workdir);
      try {
        return await withHeartbeatPump(() => fn(input));
      } finally {
        release();
      }
    };
}

export function createImporterHostActivities(host: ImporterHost, importer: ImporterActivities) {
  const local = hostLocalStep(host);
  return {
    initScratchPostgres: local(importer.initScratchPostgres),
    dumpSource: local(importer.dumpSource),
    restoreDump: local(importer.restoreDump),
    stopScratchPostgres: local(importer.stopScratchPostgres),
    uploadPgdata: local(importer.uploadPgdata),
    // A tool whose activity never heard of its cancellation (its worker died first) may still run,
    // frozen or not: stop its process group before its directory goes.
    destroyWorkdir: local(async (input: { workdir: string }) => {
      const paths = dumpPaths(input.workdir);
      await killRecordedGroup(paths.dumpPidFile);
      await killRecordedGroup(paths.restorePidFile);
      return importer.destroyWorkdir(input);
    }),
  };
}

export type ImporterClaimActivities = ReturnType<typeof createImporterClaimActivities>;
export type ImporterHostActivities = ReturnType<typeof createImporterHostActivities>;
