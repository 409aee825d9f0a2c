/** The pure parts of the safekeeper protocol: term histories, where logs agree, frames. */
import { describe, expect, it } from 'vitest';
import {
  agreementPoint,
  compactHistory,
  decodeFeedbackFrame,
  decodePusherFrame,
  encodeCommitFrame,
  encodeFeedbackFrame,
  encodeWalFrame,
  lastLogTerm,
  parseTermHistory,
  formatTermHistory,
  ProtocolFrameError,
} from '../drivers/storage-backend/stock/safekeeper-protocol';
import { pushStartFor } from '../drivers/storage-backend/stock/consensus';

const h = (text: string) => parseTermHistory(text);

describe('term histories', () => {
  it('round-trips and rejects histories no proposer could have written', () => {
    expect(formatTermHistory(h('0@0/100,3@0/200'))).toBe('0@0/100,3@0/200');
    expect(h('-')).toEqual([]);
    expect(() => h('3@0/100,2@0/200')).toThrow(/terms must increase/);
    expect(() => h('1@0/200,2@0/100')).toThrow(/must not decrease/);
    expect(() => h('1@zz')).toThrow(/bad term history entry/);
    expect(() => h('99999999999999999999@0/1')).toThrow(/out of range/);
  });

  it('counts only terms whose WAL the holder has', () => {
    expect(lastLogTerm(h('1@0/100,4@0/300'), 0x200n)).toBe(1n);
    expect(lastLogTerm(h('1@0/100,4@0/300'), 0x300n)).toBe(4n);
    expect(lastLogTerm([], 0n)).toBe(-1n);
  });

  it('cuts a stale minority tail back to where the logs diverged', () => {
    // Term 2 wrote 0x100..0x500 but only this safekeeper got 0x300..0x500; term 3 took over at 0x300.
    const proposer = h('1@0/100,2@0/200,3@0/300');
    expect(agreementPoint(proposer, h('1@0/100,2@0/200'), 0x500n)).toBe(0x300n);
    // A safekeeper that already follows term 3 agrees up to its own flush.
    expect(agreementPoint(proposer, proposer, 0x450n)).toBe(0x450n);
    // Behind: everything it has is ours.
    expect(agreementPoint(proposer, h('1@0/100'), 0x180n)).toBe(0x180n);
    // A term the proposer never saw (written elsewhere after term 1) diverges at term 2's start.
    expect(agreementPoint(proposer, h('1@0/100,5@0/250'), 0x600n)).toBe(0x200n);
    // Nothing in common: start over (the caller uses the proposer's first LSN).
    expect(agreementPoint(proposer, h('7@0/100'), 0x600n)).toBeNull();
    expect(pushStartFor(proposer, null)).toBe(0x100n);
    expect(pushStartFor(proposer, { term: 2n, termHistory: h('7@0/100'), flushLsn: 0x600n, commitLsn: 0n, timelineStartLsn: 0x100n })).toBe(0x100n);
  });

  it('drops terms that wrote nothing without changing where logs agree', () => {
    const full = h('0@0/100,1@0/100,2@0/300,3@0/300,4@0/300');
    const compact = compactHistory(full);
    expect(formatTermHistory(compact)).toBe('1@0/100,4@0/300');
    const status = (acceptor: string, flush: bigint) => ({ term: 0n, termHistory: h(acceptor), flushLsn: flush, commitLsn: 0n, timelineStartLsn: 0x100n });
    for (const acceptor of ['0@0/100', '0@0/100,1@0/100', '0@0/100,1@0/100,2@0/300', '0@0/100,1@0/100,2@0/300,3@0/300']) {
      for (const flush of [0x100n, 0x250n, 0x300n, 0x400n]) {
        expect(pushStartFor(compact, status(acceptor, flush)), `${acceptor} flushed to ${flush}`).toBe(pushStartFor(full, status(acceptor, flush)));
      }
    }
  });
});

describe('push frames', () => {
  it('round-trips every frame kind', () => {
    expect(decodePusherFrame(encodeWalFrame(0x16b5a50n, 0x16b5000n, Buffer.from('abc')))).toEqual({
      kind: 'wal',
      startLsn: 0x16b5a50n,
      commitLsn: 0x16b5000n,
      data: Buffer.from('abc'),
    });
    expect(decodePusherFrame(encodeCommitFrame(42n))).toEqual({ kind: 'commit', commitLsn: 42n });
    expect(decodeFeedbackFrame(encodeFeedbackFrame({ flushLsn: 1n, commitLsn: 2n, term: 3n }))).toEqual({ kind: 'feedback', flushLsn: 1n, commitLsn: 2n, term: 3n });
  });

  it('rejects malformed frames with a reason', () => {
    expect(() => decodePusherFrame(Buffer.alloc(0))).toThrow(ProtocolFrameError);
    expect(() => decodePusherFrame(Buffer.from([0x77, 0, 0]))).toThrow(/needs start and commit LSNs/);
    expect(() => decodePusherFrame(encodeWalFrame(0xffffffffffffffffn, 0n, Buffer.from('x')))).toThrow(/past the end of the LSN space/);
    expect(() => decodePusherFrame(Buffer.from([0x63, 1]))).toThrow(/9 bytes/);
    expect(() => decodePusherFrame(Buffer.from([0x00]))).toThrow(/unknown push frame tag 0x00/);
    expect(() => decodeFeedbackFrame(Buffer.from([0x66]))).toThrow(/unexpected safekeeper frame/);
  });
});
