import { DecryptCommand, EncryptCommand, KMSClient, type KMSClientConfig } from '@aws-sdk/client-kms';
import { DecryptionError, KeyUnavailableError, type KeyProvider } from './key-provider';

/** KMS error names that no retry can fix: the key or the ciphertext is wrong, or access is denied. */
const PERMANENT_KMS_ERRORS: Record<string, 'key' | 'ciphertext'> = {
  NotFoundException: 'key',
  DisabledException: 'key',
  KMSInvalidStateException: 'key',
  InvalidKeyUsageException: 'key',
  AccessDeniedException: 'key',
  IncorrectKeyException: 'ciphertext',
  InvalidCiphertextException: 'ciphertext',
};

function translate(err: unknown, op: string, keyId: string): Error {
  const name = (err as Error)?.name ?? 'Error';
  const kind = PERMANENT_KMS_ERRORS[name];
  const text = `KMS ${op} with key ${JSON.stringify(keyId)} failed: ${name}: ${(err as Error)?.message ?? String(err)}`;
  if (kind === 'ciphertext') return new DecryptionError(text);
  if (kind === 'key') return new KeyUnavailableError(text);
  return err instanceof Error ? Object.assign(new Error(text), { name, cause: err }) : new Error(text);
}

/**
 * AWS KMS as a key provider. The key id is passed to both calls, so KMS refuses a ciphertext
 * that was made under another key (IncorrectKeyException) instead of decrypting it silently.
 */
export function createKmsKeyProvider(client: KMSClient): KeyProvider {
  return {
    async encrypt(plaintext, keyId) {
      try {
        const out = await client.send(new EncryptCommand({ KeyId: keyId, Plaintext: plaintext }));
        if (!out.CiphertextBlob) throw new Error('KMS returned no CiphertextBlob');
        return Buffer.from(out.CiphertextBlob);
      } catch (err) {
        throw translate(err, 'Encrypt', keyId);
      }
    },
    async decrypt(ciphertext, keyId) {
      try {
        const out = await client.send(new DecryptCommand({ KeyId: keyId, CiphertextBlob: ciphertext }));
        if (!out.Plaintext) throw new Error('KMS returned no Plaintext');
        return Buffer.from(out.Plaintext);
      } catch (err) {
        throw translate(err, 'Decrypt', keyId);
      }
    },
  };
}

/** A KMS client; region and credentials come from the caller's validated configuration. */
export function createKmsClient(config: Pick<KMSClientConfig, 'region' | 'endpoint' | 'credentials' | 'maxAttempts'>): KMSClient {
  return new KMSClient({ maxAttempts: 3, ...config });
}
