/** The physical streaming-replication messages inside START_REPLICATION's COPY BOTH. */
import type { Lsn } from '../../../model/lsn';

export type WalSenderMessage =
  | { kind: 'xlogData'; startLsn: Lsn; walEnd: Lsn; data: Buffer }
  | { kind: 'keepalive'; walEnd: Lsn; replyRequested: boolean };

export function decodeWalSenderMessage(payload: Buffer): WalSenderMessage {
  const tag = payload[0];
  if (tag === 0x77 /* w */ && payload.length >= 25) {
    return { kind: 'xlogData', startLsn: payload.readBigUInt64BE(1), walEnd: payload.readBigUInt64BE(9), data: payload.subarray(25) };
  }
  if (tag === 0x6b /* k */ && payload.length >= 18) {
    return { kind: 'keepalive', walEnd: payload.readBigUInt64BE(1), replyRequested: payload[17] === 1 };
  }
  throw new Error(`unexpected replication message (tag ${tag === undefined ? 'none' : `0x${tag.toString(16)}`}, ${payload.length} bytes)`);
}

const PG_EPOCH_MS = 946_684_800_000n;

/** Standby status update: the walsender releases synchronous commits up to `flush`. */
export function encodeStandbyStatus(write: Lsn, flush: Lsn, apply: Lsn, replyRequested = false): Buffer {
  const out = Buffer.alloc(34);
  out[0] = 0x72; // r
  out.writeBigUInt64BE(write, 1);
  out.writeBigUInt64BE(flush, 9);
  out.writeBigUInt64BE(apply, 17);
  out.writeBigInt64BE((BigInt(Date.now()) - PG_EPOCH_MS) * 1000n, 25);
  out[33] = replyRequested ? 1 : 0;
  return out;
}
