import { Connection, type ConnectionOptions } from '@temporalio/client';
import type { TLSConfig } from '@temporalio/client';
import { readTlsFile, type TemporalConfig } from './config';

/** Connection options shared by clients and workers, for a dev server, a cluster or Temporal Cloud. */
export function temporalConnectionOptions(cfg: TemporalConfig): { address: string; tls?: TLSConfig | boolean; apiKey?: string } {
  let tls: TLSConfig | boolean | undefined;
  if (typeof cfg.tls === 'object') {
    const crt = readTlsFile(cfg.tls.clientCertPath);
    const key = readTlsFile(cfg.tls.clientKeyPath);
    tls = {
      serverNameOverride: cfg.tls.serverName,
      serverRootCACertificate: readTlsFile(cfg.tls.serverCaCertPath),
      clientCertPair: crt && key ? { crt, key } : undefined,
    };
  } else {
    tls = cfg.tls || undefined;
  }
  return { address: cfg.address, tls, ...(cfg.apiKey ? { apiKey: cfg.apiKey } : {}) };
}

export async function connectClient(cfg: TemporalConfig, extra: Partial<ConnectionOptions> = {}): Promise<Connection> {
  return Connection.connect({ ...temporalConnectionOptions(cfg), connectTimeout: '10s', ...extra });
}
