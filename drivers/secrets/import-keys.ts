import { createFileOnceSync } from '../../common/atomic-write';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import type { ImportConfig } from '../../common/config';
import { createKmsClient, createKmsKeyProvider } from './kms';
import { createLocalKeyProvider, generateLocalKey, loadLocalKeyFile } from './local-aes';
import { KeyUnavailableError, type KeyKind, type KeyProviders } from './key-provider';

/**
 * The key providers for import specs, from the configuration. The client encrypts with
 * `config.key`; the importer decrypts with whichever provider the spec names. A Local key lives
 * in a file; the embedded default one (in the stack directory) is created on first use.
 */

/**
 * Creates the default local key file if it does not exist yet. Written to a temporary file and
 * hard-linked into place, so two processes creating it at once agree on one key and nobody ever
 * reads a half-written file.
 */
export function ensureLocalImportKey(file: string): void {
  if (existsSync(file)) return;
  // The key file is 0600; the directories stay traversable: the default one is the stack's, where
  // the unprivileged Postgres user must reach its computes' data directories.
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
  createFileOnceSync(file, `${generateLocalKey()}\n`, { mode: 0o600 });
}

/** Key id and kind new specs are encrypted under. */
export function specKeyOf(config: ImportConfig): { kind: KeyKind; keyId: string } {
  return { kind: config.key.kind, keyId: config.key.keyId };
}

export function importKeyProviders(config: ImportConfig): KeyProviders {
  const providers: KeyProviders = {};
  const localKeyId = config.key.kind === 'Local' ? config.key.keyId : 'durable-compute-local';
  if (config.key.kind === 'Local' && config.key.isDefaultFile) ensureLocalImportKey(config.key.file);
  if (existsSync(config.localKeyFile)) {
    providers.Local = createLocalKeyProvider({ [localKeyId]: loadLocalKeyFile(config.localKeyFile) });
  } else if (config.key.kind === 'Local') {
    throw new KeyUnavailableError(`The local import key file ${config.localKeyFile} does not exist (DURABLE_COMPUTE_IMPORT_KEY_FILE)`);
  }
  // The KMS client is cheap to create and talks to KMS only when a spec names a KMS key.
  providers.KMS = createKmsKeyProvider(createKmsClient({ region: config.kms.region, ...(config.kms.endpoint ? { endpoint: config.kms.endpoint } : {}) }));
  return providers;
}
