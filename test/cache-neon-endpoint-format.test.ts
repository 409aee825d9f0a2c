/**
 * The cache state in Neon's endpoint-storage format (zstd of the LFC state), and the HTTP store
 * that keeps it in the test stack's endpoint storage stand-in.
 */
import { execFileSync } from 'node:child_process';
import { ApplicationFailure } from '@temporalio/common';
import { describe, expect, it, inject } from 'vitest';
import { createEndpointStorageStore, decodeNeonEndpointState, encodeNeonEndpointState, ENDPOINT_STORAGE_REFUSED, neonStateAsBlockRanges } from '../drivers/cache';
import { buildNeonLfcState, inspectNeonLfcState } from '../drivers/cache/neon-lfc-format';
import { zstdDeclaredSize } from '../drivers/cache/neon-endpoint-format';
import { mintDevEndpointStorageToken } from '../dev/endpoint-storage/keys';
import type { BlockRange, CacheState } from '../model/cache-state';
import { neonId, uniqueId } from './helpers/ids';
import { rawZstdFrame } from './helpers/zstd-frame';

const ranges: BlockRange[] = [
  { database: 5, tablespace: 1663, relfilenode: 16384, fork: 0, firstBlock: 0, blockCount: 200 },
  { database: 5, tablespace: 1663, relfilenode: 16384, fork: 0, firstBlock: 300, blockCount: 5 },
  { database: 0, tablespace: 1664, relfilenode: 1262, fork: 0, firstBlock: 0, blockCount: 1 },
  { database: 5, tablespace: 1663, relfilenode: 16390, fork: 2, firstBlock: 130, blockCount: 3 },
];

async function failureOf(p: Promise<unknown>): Promise<ApplicationFailure> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof ApplicationFailure)) throw new Error(`expected an ApplicationFailure, got ${String(err)}`);
  return err;
}

describe("Neon's endpoint-storage state format", () => {
  it('stores stock block ranges as 128-page LFC chunks keyed by their chunk-aligned first block, and loads them back', async () => {
    const blob = await encodeNeonEndpointState({ kind: 'block-ranges', blockSize: 8192, ranges });
    const state = await decodeNeonEndpointState(blob);
    if (state.kind !== 'neon-lfc') throw new Error('expected a Neon LFC state');
    const summary = inspectNeonLfcState(state.lfcState);
    // 0-127, 128-199, 256-383 (300-304), the shared catalog's chunk, 128-255 of the vm fork.
    expect(summary).toEqual({ chunks: 5, pages: 209, chunkSizeLog: 7 });
    const tagBlocks = [0, 1, 2, 3, 4].map((i) => Buffer.from(state.lfcState).readUInt32LE(16 + i * 20 + 16));
    expect(tagBlocks).toEqual([0, 128, 256, 0, 128]);
    expect(neonStateAsBlockRanges(state)).toEqual({ kind: 'block-ranges', blockSize: 8192, ranges });
  });

  it("loads a state as Neon's compute writes it (zstd without a content size), byte for byte, and as block ranges", async () => {
    const lfc = buildNeonLfcState(7, [
      { tablespace: 1663, database: 5, relfilenode: 16384, fork: 0, firstBlock: 256, cached: [0, 1, 2, 10, 127] },
      { tablespace: 1663, database: 5, relfilenode: 16384, fork: 0, firstBlock: 0, cached: [127] },
      { tablespace: 1663, database: 5, relfilenode: 16384, fork: 0, firstBlock: 128, cached: [0, 1] },
    ]);
    const blob = rawZstdFrame(lfc);
    expect(zstdDeclaredSize(blob)).toBeUndefined();
    const state = await decodeNeonEndpointState(blob);
    expect(state).toMatchObject({ kind: 'neon-lfc', blockSize: 8192, pages: 8 });
    if (state.kind !== 'neon-lfc') throw new Error('unreachable');
    expect(Buffer.from(state.lfcState)).toEqual(lfc);
    const rel = { database: 5, tablespace: 1663, relfilenode: 16384, fork: 0 as const };
    expect(neonStateAsBlockRanges(state).ranges).toEqual([
      { ...rel, firstBlock: 256, blockCount: 3 },
      { ...rel, firstBlock: 266, blockCount: 1 },
      { ...rel, firstBlock: 383, blockCount: 1 },
      // Chunk order is kept; 127 and 128-129 continue each other and join.
      { ...rel, firstBlock: 127, blockCount: 3 },
    ]);
  });

  it('writes what an independent zstd reader (the RFC frame parser here) and the LFC layout accept: a Neon state goes out unchanged', async () => {
    const lfc = buildNeonLfcState(7, [{ tablespace: 1663, database: 5, relfilenode: 1, fork: 0, firstBlock: 0, cached: [3] }]);
    const state: CacheState = { kind: 'neon-lfc', blockSize: 8192, lfcState: lfc, pages: 1 };
    const blob = await encodeNeonEndpointState(state);
    expect(blob.readUInt32LE(0)).toBe(0xfd2fb528);
    expect(zstdDeclaredSize(blob)).toBe(lfc.length);
    expect(await decodeNeonEndpointState(blob)).toEqual({ ...state, lfcState: Uint8Array.from(lfc) });
  });

  it('interoperates with the reference zstd tool (installed by .ci/run): it reads what we write, we read what it writes from a stream', async () => {
    const blob = await encodeNeonEndpointState({ kind: 'block-ranges', blockSize: 8192, ranges });
    const raw = execFileSync('zstd', ['-d', '-c', '-q'], { input: blob });
    expect(inspectNeonLfcState(raw)).toEqual({ chunks: 5, pages: 209, chunkSizeLog: 7 });
    // From stdin the tool cannot know the size, so the frame declares none, as Neon's streaming encoder's.
    const fromTool = execFileSync('zstd', ['-c', '-q', '-3'], { input: raw });
    expect(zstdDeclaredSize(fromTool)).toBeUndefined();
    const state = await decodeNeonEndpointState(fromTool);
    if (state.kind !== 'neon-lfc') throw new Error('unreachable');
    expect(neonStateAsBlockRanges(state).ranges).toEqual(ranges);
  });

  it('refuses, as corrupt, what is not zstd, a frame claiming a huge size (before allocating it), and a bad LFC state inside', async () => {
    expect((await failureOf(decodeNeonEndpointState(Buffer.from('DCCS not zstd')))).message).toMatch(/^corrupt cache state: not zstd-compressed/);
    const bomb = await failureOf(decodeNeonEndpointState(rawZstdFrame(Buffer.alloc(16), 4n * 1024n ** 3n)));
    expect(bomb.message).toMatch(/^corrupt cache state: uncompressed size 4294967296 exceeds/);
    const bad = buildNeonLfcState(7, [{ tablespace: 1663, database: 5, relfilenode: 1, fork: 0, firstBlock: 0, cached: [3] }]);
    bad.writeUInt32LE(2, 8); // claims two pages, marks one
    const inner = await failureOf(decodeNeonEndpointState(rawZstdFrame(bad)));
    expect(inner.type).toBe('CorruptCacheState');
    expect(inner.message).toMatch(/claims 2 pages but its bitmap marks 1/);
    // Overlapping chunks cannot become block ranges.
    const twice = buildNeonLfcState(7, [
      { tablespace: 1663, database: 5, relfilenode: 1, fork: 0, firstBlock: 0, cached: [3] },
      { tablespace: 1663, database: 5, relfilenode: 1, fork: 0, firstBlock: 0, cached: [3] },
    ]);
    const decoded = await decodeNeonEndpointState(rawZstdFrame(twice));
    if (decoded.kind !== 'neon-lfc') throw new Error('unreachable');
    expect(() => neonStateAsBlockRanges(decoded)).toThrow(/overlap/);
  });

  it('refuses a stock state of pages other than 8 KiB, which the format cannot say', async () => {
    const err = await failureOf(encodeNeonEndpointState({ kind: 'block-ranges', blockSize: 4096, ranges }));
    expect(err.type).toBe('IncompatibleCacheState');
  });
});

describe('the endpoint storage cache-state store', () => {
  const stack = () => inject('stack');
  const tenant = neonId();
  const timeline = neonId();
  const endpoint = uniqueId('ep');

  it('puts and gets through the stand-in; absent is null', async () => {
    const token = await mintDevEndpointStorageToken(stack().stackDir, { tenant_id: tenant, timeline_id: timeline, endpoint_id: endpoint });
    const store = createEndpointStorageStore({ addr: stack().endpointStorage.addr, token });
    expect(await store.get(tenant, timeline, endpoint)).toBeNull();
    await store.put(tenant, timeline, endpoint, Buffer.from('state'));
    expect(await store.get(tenant, timeline, endpoint)).toEqual(Buffer.from('state'));
  });

  it("fails without retry when refused (another endpoint's token), never showing the token", async () => {
    const token = await mintDevEndpointStorageToken(stack().stackDir, { tenant_id: tenant, timeline_id: timeline, endpoint_id: uniqueId('ep') });
    const store = createEndpointStorageStore({ addr: stack().endpointStorage.addr, token });
    const err = await failureOf(store.put(tenant, timeline, endpoint, Buffer.from('x')));
    expect(err.type).toBe(ENDPOINT_STORAGE_REFUSED);
    expect(err.nonRetryable).toBe(true);
    expect(err.message).toMatch(/^endpoint storage answered 403 to PUT http:\/\/.*\/lfc_state/);
    expect(err.message).not.toContain(token.split('.')[2]!);
    // A token that is no token: 400, also final.
    const garbage = createEndpointStorageStore({ addr: stack().endpointStorage.addr, token: 'a.b.c' });
    expect((await failureOf(garbage.get(tenant, timeline, endpoint))).message).toMatch(/answered 400 .*invalid token/);
  });

  it('an unreachable storage is a retryable error', async () => {
    const store = createEndpointStorageStore({ addr: '127.0.0.1:1', token: 'a.b.c' });
    const err = await store.get(tenant, timeline, endpoint).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err).toBeInstanceOf(Error);
    expect(err).not.toBeInstanceOf(ApplicationFailure);
    expect(err!.message).toMatch(/^endpoint storage GET http:\/\/127\.0\.0\.1:1\/.* failed/);
  });
});
