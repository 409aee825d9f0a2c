/**
 * Encryption of import secrets (the source connection string) under a named key. Two kinds exist,
 * as in spec.json's `encryption_secret`: `KMS` (AWS KMS, production) and `Local` (an AES-256-GCM
 * key held by the importer, the embedded default).
 */
export interface KeyProvider {
  encrypt(plaintext: Buffer, keyId: string): Promise<Buffer>;
  decrypt(ciphertext: Buffer, keyId: string): Promise<Buffer>;
}

export type KeyKind = 'KMS' | 'Local';

/** The providers an importer has; a spec naming a kind without a provider is refused. */
export type KeyProviders = Partial<Record<KeyKind, KeyProvider>>;

/** Raised when a ciphertext cannot be decrypted: wrong key, tampered or truncated data. */
export class DecryptionError extends Error {
  override name = 'DecryptionError';
}

/** Raised when a key is unknown or unusable (not a transient failure: retrying will not help). */
export class KeyUnavailableError extends Error {
  override name = 'KeyUnavailableError';
}
