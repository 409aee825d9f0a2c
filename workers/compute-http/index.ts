/**
 * Mounts compute_ctl's external HTTP API beside the compute worker: a Temporal client with the
 * worker's connection settings and encrypted data converter, the local Postgres, and the key set.
 */
import { Client } from '@temporalio/client';
import type { AppConfig } from '../../common/config';
import { encryptedDataConverter } from '../../common/codec/data-converter';
import { findPostgres } from '../../common/pg-binaries';
import { connectWorkerConnection } from '../run-worker';
import { readJwksFile } from './api-keys';
import { startComputeHttpServer, type ComputeHttpServer } from './server';

/** compute_ctl's --external-http-port default. */
export const DEFAULT_COMPUTE_HTTP_PORT = 3080;

export interface ComputeApiOptions {
  computeId: string;
  pgdata: string;
  pgBinDir?: string;
  port: number;
  host?: string;
  /** A fixed key set (JWKS JSON), as compute_ctl's --config; default: the workflow's. */
  jwksFile?: string;
  log?: (line: string) => void;
}

export async function startComputeApi(config: AppConfig, opts: ComputeApiOptions): Promise<ComputeHttpServer> {
  const keys = opts.jwksFile ? await readJwksFile(opts.jwksFile) : undefined;
  const pg = findPostgres({ pgBinDir: opts.pgBinDir ?? config.pgBinDir });
  // The native connection the worker uses too: the VM carries no second (JavaScript) gRPC stack.
  const connection = await connectWorkerConnection(config);
  try {
    const client = new Client({ connection, namespace: config.temporal.namespace, dataConverter: encryptedDataConverter(config.payloadKeys) });
    const server = await startComputeHttpServer({
      computeId: opts.computeId,
      port: opts.port,
      host: opts.host,
      client,
      // The superuser the compute worker's activities use (node-activities' default).
      postgres: { pgdata: opts.pgdata, pgBinDir: pg.binDir, admin: { user: 'cloud_admin' } },
      keys,
      log: opts.log,
    });
    return {
      port: server.port,
      close: async () => {
        await server.close();
        await connection.close();
      },
    };
  } catch (err) {
    await connection.close();
    throw err;
  }
}
