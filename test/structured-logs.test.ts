import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { createLogger } from '../common/logger';
import { projectRoot, tsNodeArgs } from '../common/paths';
import { testPgdata } from './helpers/compute';
import { uniqueId } from './helpers/ids';
import { killAllProcesses, startProcess } from '../dev/child-processes';
import { testEnv } from './helpers/stack';

interface LogLine {
  level: string;
  time: string;
  msg: string;
  [field: string]: unknown;
}

/** Every non-empty line of `output` as a log line; fails naming the first line that is not one. */
function logLines(output: string): LogLine[] {
  return output
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((line) => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        throw new Error(`not a JSON log line: ${line}`);
      }
      expect(parsed, line).toMatchObject({ level: expect.stringMatching(/^(trace|debug|info|warn|error|fatal)$/), time: expect.any(String), msg: expect.any(String) });
      expect(Number.isNaN(Date.parse((parsed as LogLine).time)), line).toBe(false);
      return parsed as LogLine;
    });
}

afterAll(() => killAllProcesses());

describe('structured logs', () => {
  it("a worker's output (not a terminal) is JSON lines, the SDK's own lines included", async () => {
    const worker = await startProcess('bin/durable-compute.mjs', ['worker', 'compute', '--compute-id', uniqueId('logs'), '--pgdata', testPgdata(), '--http-port', '0', '--http-host', '127.0.0.1'], {
      env: { ...testEnv(), DURABLE_COMPUTE_FAILPOINTS: '', DURABLE_COMPUTE_ENABLE_FAILPOINTS: '' },
      readyLine: /compute worker ready/,
    });
    await worker.kill('SIGTERM');
    const lines = logLines(worker.output());
    // Ours...
    expect(lines).toContainEqual(expect.objectContaining({ level: 'info', msg: expect.stringMatching(/^compute worker ready on compute-node-/) }));
    // ...and the SDK's, through the Runtime logger, in the same shape with its own fields.
    expect(lines).toContainEqual(expect.objectContaining({ level: 'info', msg: 'Worker state changed', state: 'RUNNING', sdkComponent: 'worker', taskQueue: expect.stringMatching(/^compute-node-/) }));
  });

  it('redacts passwords, bearer tokens and connection strings, whichever way they are logged', async () => {
    const password = `pw-${randomBytes(12).toString('hex')}`;
    const token = randomBytes(24).toString('base64url');
    const dbPassword = `db-${randomBytes(12).toString('hex')}`;
    const child = spawn(process.execPath, [...tsNodeArgs(), path.join(projectRoot, 'test/fixtures/log-secrets.ts'), password, token, dbPassword], {
      cwd: projectRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));

    expect(code, output).toBe(0);
    for (const secret of [password, token, dbPassword]) expect(output).not.toContain(secret);

    const lines = logLines(output);
    const byMsg = (msg: string) => lines.find((l) => l.msg === msg);
    // The SDK's logger buffers its lines briefly to order them by time, so they may come later.
    expect(lines.map((l) => l.msg).sort()).toEqual(
      [
        'applying the spec: role alice with password=********',
        'calling the pageserver with Authorization: ********',
        'connecting to postgresql://cloud_admin:********@127.0.0.1:5432/postgres',
        'Activity failed',
        'done',
      ].sort(),
    );
    expect(byMsg('applying the spec: role alice with password=********')).toMatchObject({ level: 'info', role: 'alice', password: '********' });
    expect(byMsg('calling the pageserver with Authorization: ********')).toMatchObject({ level: 'warn', request: { authorization: '********' } });
    // The SDK's line: its error keeps its message (JSON would drop an Error's), masked.
    expect(byMsg('Activity failed')).toMatchObject({ level: 'error', sdkComponent: 'activity', error: { type: 'Error', message: 'connection to postgres://alice:********@db.internal/app refused' } });
    expect(byMsg('done')).toMatchObject({ settings: { connectionString: '********' } });
  });

  it('masks secrets inside nested fields and errors, and keeps what is not secret', () => {
    const written: string[] = [];
    const logger = createLogger(new Writable({ write: (chunk: Buffer, _enc, done) => (written.push(chunk.toString()), done()) }) as unknown as { write(s: string): void });
    const cause = new Error('FATAL: password authentication failed; dsn postgresql://u:hunter2hunter2@h/db');
    logger.error({ err: new Error('startup failed', { cause }), spec: { roles: [{ name: 'alice', encrypted_password: 'SCRAM-SHA-256$4096:abc' }] }, lsn: 123n }, 'compute failed');
    const line = JSON.parse(written.join('')) as LogLine;
    expect(JSON.stringify(line)).not.toContain('hunter2hunter2');
    expect(JSON.stringify(line)).not.toContain('4096:abc');
    expect(line).toMatchObject({ level: 'error', msg: 'compute failed', lsn: '123', spec: { roles: [{ name: 'alice' }] } });
    // pino's error serializer quotes the causes in the message: masked there too.
    expect((line.err as { message: string }).message).toMatch(/^startup failed/);
    expect(JSON.stringify(line.err)).toContain('postgresql://u:********@h/db');
  });
});
