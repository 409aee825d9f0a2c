/**
 * The S3 client's request timeout: an endpoint that accepts the connection and never answers (a
 * stalled S3) makes the request fail with a TimeoutError and be retried, rather than hang.
 */
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createS3Client } from '../drivers/s3/client';

let server: net.Server;
let connections = 0;
const sockets: net.Socket[] = [];

beforeAll(async () => {
  server = net.createServer((socket) => {
    connections += 1;
    sockets.push(socket);
    socket.resume(); // reads the request, answers nothing
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
});
afterAll(async () => {
  for (const s of sockets) s.destroy();
  await new Promise((resolve) => server.close(resolve));
});

it('a stalled S3 request times out and is retried instead of hanging', async () => {
  const { port } = server.address() as AddressInfo;
  const s3 = createS3Client(
    { region: 'us-east-1', bucket: 'b', endpoint: `http://127.0.0.1:${port}`, forcePathStyle: true, credentials: { accessKeyId: 'k', secretAccessKey: 's' }, requestTimeoutMs: 300 },
    { maxAttempts: 2 },
  );
  const started = Date.now();
  await expect(s3.send(new GetObjectCommand({ Bucket: 'b', Key: 'k' }))).rejects.toMatchObject({ name: 'TimeoutError' });
  expect(Date.now() - started).toBeLessThan(5000);
  expect(connections).toBe(2);
  s3.destroy();
}, 10_000);
