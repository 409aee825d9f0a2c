import { fileURLToPath } from 'node:url';
import type { DataConverter } from '@temporalio/common';
import type { PayloadKeys } from '../config';
import { UserFacingError } from '../errors';
import { EncryptionCodec } from './encryption-codec';

const failureConverterPath = fileURLToPath(new URL('./failure-converter.cjs', import.meta.url));

/**
 * The data converter of every client and worker that handles compute or import workflows: every
 * payload and failure message is encrypted, so history and the Web UI show ciphertext.
 */
export function encryptedDataConverter(keys: PayloadKeys | undefined): DataConverter {
  if (!keys) {
    throw new UserFacingError(
      'No payload encryption key: set DURABLE_COMPUTE_PAYLOAD_KEY (base64 of 32 bytes, e.g. `openssl rand -base64 32`) ' +
        'or DURABLE_COMPUTE_PAYLOAD_KEY_FILE; the dev stack creates one in its directory.',
    );
  }
  return { payloadCodecs: [new EncryptionCodec(keys.current, keys.previous)], failureConverterPath };
}
