import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { METADATA_ENCODING_KEY, type Payload, type PayloadCodec, ValueError } from '@temporalio/common';
import proto from '@temporalio/proto';

/**
 * Encrypts every payload (workflow inputs, results, update arguments, and failure messages when
 * the failure converter encodes common attributes) with AES-256-GCM, so specs, tokens and password
 * hashes are ciphertext in history and the Web UI.
 */
export const ENCRYPTED_ENCODING = 'binary/encrypted';
const KEY_ID_METADATA = 'encryption-key-id';
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

/** What the server writes into an ActivityTaskCanceled event for an activity that never started. */
const SERVER_CANCEL_DETAILS = JSON.stringify('ACTIVITY_ID_NOT_STARTED');

function isServerCancelDetails(encodingName: string, payload: Payload): boolean {
  return encodingName === 'json/plain' && Object.keys(payload.metadata ?? {}).length === 1 && Buffer.from(payload.data ?? []).toString() === SERVER_CANCEL_DETAILS;
}

export function payloadKeyId(key: Buffer): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 16);
}

export class EncryptionCodec implements PayloadCodec {
  private readonly keys = new Map<string, Buffer>();
  private readonly currentId: string;

  /** `key` encrypts; `previousKeys` only decrypt, so a key can be rotated under running workflows. */
  constructor(key: Buffer, previousKeys: Buffer[] = []) {
    for (const k of [key, ...previousKeys]) {
      if (k.length !== 32) throw new ValueError('payload encryption keys must be 32 bytes (AES-256)');
      this.keys.set(payloadKeyId(k), k);
    }
    this.currentId = payloadKeyId(key);
  }

  async encode(payloads: Payload[]): Promise<Payload[]> {
    const key = this.keys.get(this.currentId)!;
    return payloads.map((payload) => {
      const nonce = randomBytes(NONCE_BYTES);
      const cipher = createCipheriv('aes-256-gcm', key, nonce);
      const plain = proto.temporal.api.common.v1.Payload.encode(payload).finish();
      const sealed = Buffer.concat([nonce, cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
      return {
        metadata: {
          [METADATA_ENCODING_KEY]: Buffer.from(ENCRYPTED_ENCODING),
          [KEY_ID_METADATA]: Buffer.from(this.currentId),
        },
        data: sealed,
      };
    });
  }

  /**
   * Refuses every payload that is not ciphertext under one of our keys: whoever can write to the
   * namespace without the key (the Temporal CLI or UI, a client without this codec) must not be
   * able to hand a worker a spec, an update argument or a result. The allow-list of payloads that
   * may stay in clear text is empty on purpose, because the SDK never hands the codec the ones
   * that must: search attributes and headers skip the codec (the workers' activation decoding
   * passes `skipSearchAttributes` and `skipHeaders`). Memo, user metadata (summaries), inputs,
   * results, signal, query and update arguments, heartbeat details and failure attributes all go
   * through `encode` in our clients and workers, so a clear-text one was written by someone else.
   * A worker given one fails the workflow task with this error and runs nothing.
   *
   * One exception: the Temporal server itself writes the details of an activity cancelled before
   * any worker started it, as the JSON string "ACTIVITY_ID_NOT_STARTED". That exact payload carries
   * nothing anyone could inject; refusing it would fail every later workflow task of a workflow
   * that cancels a scheduled retry (a lost VM), and leave it stuck.
   */
  async decode(payloads: Payload[]): Promise<Payload[]> {
    return payloads.map((payload) => {
      const encoding = payload.metadata?.[METADATA_ENCODING_KEY];
      const encodingName = encoding ? Buffer.from(encoding).toString() : '';
      if (isServerCancelDetails(encodingName, payload)) return payload;
      if (encodingName !== ENCRYPTED_ENCODING) {
        // Name the encoding, never the content: the payload may be a secret someone leaked.
        throw new ValueError(
          `refused an unencrypted payload (encoding ${JSON.stringify(encodingName || '(none)')}): this namespace's payloads must be encrypted with the payload key ` +
            '(DURABLE_COMPUTE_PAYLOAD_KEY); it was written by a client without the key, e.g. the Temporal CLI or UI',
        );
      }
      const keyId = Buffer.from(payload.metadata?.[KEY_ID_METADATA] ?? []).toString();
      const key = this.keys.get(keyId);
      if (!key) throw new ValueError(`payload was encrypted with key ${keyId || '(none)'}, which this process does not have`);
      const data = Buffer.from(payload.data ?? []);
      if (data.length < NONCE_BYTES + TAG_BYTES) throw new ValueError('encrypted payload is truncated');
      const decipher = createDecipheriv('aes-256-gcm', key, data.subarray(0, NONCE_BYTES));
      decipher.setAuthTag(data.subarray(data.length - TAG_BYTES));
      const plain = Buffer.concat([decipher.update(data.subarray(NONCE_BYTES, data.length - TAG_BYTES)), decipher.final()]);
      return proto.temporal.api.common.v1.Payload.decode(plain);
    });
  }
}
