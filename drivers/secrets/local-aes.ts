import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { DecryptionError, KeyUnavailableError, type KeyProvider } from './key-provider';

/**
 * AES-256-GCM under a locally held key, for the embedded stack and tests.
 *
 * Ciphertext layout: version byte (1) | 12-byte random nonce | encrypted data | 16-byte tag.
 * The key id is bound in as additional authenticated data, so a ciphertext made for one key id
 * never decrypts under another, even when both ids name the same key bytes.
 */
const FORMAT_VERSION = 1;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;

/** Accepts a 32-byte key as 64 hex characters or as base64 (surrounding whitespace ignored). */
export function parseLocalKey(text: string, what = 'local encryption key'): Buffer {
  const trimmed = text.trim();
  const key = /^[0-9a-fA-F]{64}$/.test(trimmed)
    ? Buffer.from(trimmed, 'hex')
    : /^[A-Za-z0-9+/_-]+={0,2}$/.test(trimmed)
      ? Buffer.from(trimmed, 'base64')
      : undefined;
  // Never echo the key material: name the problem only.
  if (!key || key.length !== KEY_BYTES) {
    throw new KeyUnavailableError(`The ${what} must be ${KEY_BYTES} bytes, written as 64 hex characters or base64`);
  }
  return key;
}

/** Reads a key file written by `generateLocalKey` (or any 32-byte hex/base64 text). */
export function loadLocalKeyFile(file: string): Buffer {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new KeyUnavailableError(`Cannot read the local encryption key file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return parseLocalKey(text, `local encryption key in ${file}`);
}

/** A fresh random key, base64-encoded, for writing to a key file (mode 0600). */
export function generateLocalKey(): string {
  return randomBytes(KEY_BYTES).toString('base64');
}

export function createLocalKeyProvider(keys: Record<string, Buffer>): KeyProvider {
  for (const [id, key] of Object.entries(keys)) {
    if (key.length !== KEY_BYTES) throw new KeyUnavailableError(`Local key ${JSON.stringify(id)} must be ${KEY_BYTES} bytes, got ${key.length}`);
  }
  const keyFor = (keyId: string): Buffer => {
    const key = Object.hasOwn(keys, keyId) ? keys[keyId] : undefined;
    if (!key) throw new KeyUnavailableError(`No local encryption key with id ${JSON.stringify(keyId)} is configured`);
    return key;
  };
  return {
    async encrypt(plaintext, keyId) {
      const nonce = randomBytes(NONCE_BYTES);
      const cipher = createCipheriv('aes-256-gcm', keyFor(keyId), nonce, { authTagLength: TAG_BYTES });
      cipher.setAAD(Buffer.from(keyId, 'utf8'));
      const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
      return Buffer.concat([Buffer.from([FORMAT_VERSION]), nonce, body, cipher.getAuthTag()]);
    },
    async decrypt(ciphertext, keyId) {
      const key = keyFor(keyId);
      if (ciphertext.length < 1 + NONCE_BYTES + TAG_BYTES) {
        throw new DecryptionError(`Ciphertext too short (${ciphertext.length} bytes) to come from the local key provider`);
      }
      if (ciphertext[0] !== FORMAT_VERSION) {
        throw new DecryptionError(`Unknown local ciphertext format version ${ciphertext[0]}`);
      }
      const nonce = ciphertext.subarray(1, 1 + NONCE_BYTES);
      const tag = ciphertext.subarray(ciphertext.length - TAG_BYTES);
      const body = ciphertext.subarray(1 + NONCE_BYTES, ciphertext.length - TAG_BYTES);
      const decipher = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
      decipher.setAAD(Buffer.from(keyId, 'utf8'));
      decipher.setAuthTag(tag);
      try {
        return Buffer.concat([decipher.update(body), decipher.final()]);
      } catch {
        throw new DecryptionError(`Ciphertext failed authentication under local key ${JSON.stringify(keyId)} (tampered, truncated or made with another key)`);
      }
    },
  };
}
