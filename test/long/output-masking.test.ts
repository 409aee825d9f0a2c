/**
 * Every output path is masked: maskSecrets knows bearer tokens, Authorization headers and JSON
 * secret fields; and a full run through the CLI (a compute start, status, a failing compute, a
 * terminate; an import start and status, and a failing one) prints none of the known secrets, in
 * any CLI output or any worker's log.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { inject } from 'vitest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../dev/processes';
import { runCli, type CliResult } from '../helpers/cli';
import { cleanupComputes, createTestTimeline, exampleSpecFor, startComputeWorker, testPgdata } from '../helpers/compute';
import { neonId, uniqueId } from '../helpers/ids';
import { startImportSource, type ImportSource } from '../../dev/import-source';
import { killAllProcesses, type WorkerProcess } from '../../dev/child-processes';
import { testConfig, testEnv } from '../helpers/stack';

describe('a full run prints no secret anywhere', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dc-mask-'));
  let source: ImportSource;
  const SOURCE_PASSWORD = `src-${uniqueId('pw')}`;
  const outputs: { what: string; result: CliResult }[] = [];
  const workers: WorkerProcess[] = [];
  beforeAll(async () => {
    source = await startImportSource({ password: SOURCE_PASSWORD, database: 'shop', size: { customers: 100, orders: 200, events: 300, eventPayloadRepeat: 1 } });
  }, 180_000);
  afterAll(async () => {
    await killAllProcesses();
    await cleanupComputes();
    await source?.server.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const cli = async (what: string, args: string[], input?: string) => {
    const result = await runCli(args, { env: { ...testEnv(), DURABLE_COMPUTE_STACK_DIR: inject('stack').stackDir }, ...(input !== undefined ? { input } : {}), timeoutMs: 300_000 });
    outputs.push({ what, result });
    return result;
  };

  it('compute start, status, a failing compute, terminate; import start and status, a failing import', async () => {
    const config = testConfig();
    const stack = inject('stack');
    const leakedPassword = `leak-${uniqueId('pw')}`;
    const secrets: Record<string, string> = {
      'payload key': config.payloadKeys!.current.toString('base64'),
      'S3 secret': config.s3.credentials!.secretAccessKey,
      'storage token': config.storage.authToken!,
      'source password': SOURCE_PASSWORD,
      'password in a failing spec': leakedPassword,
    };

    // A compute that runs.
    const timeline = await createTestTimeline();
    const { spec } = await exampleSpecFor(timeline);
    const cluster = (spec as { spec: { cluster: { roles: { encrypted_password?: string }[] } } }).spec.cluster;
    for (const [i, role] of cluster.roles.entries()) if (role.encrypted_password) secrets[`role ${i} password hash`] = role.encrypted_password;
    const specFile = path.join(dir, 'spec.json');
    writeFileSync(specFile, JSON.stringify(spec));
    const computeId = uniqueId('mask');
    workers.push(await startComputeWorker(computeId, testPgdata()));
    expect((await cli('compute start', ['compute', 'start', '--compute-id', computeId, '--spec', specFile, '--wait', '--json'])).code).toBe(0);
    await cli('compute status --json', ['compute', 'status', '--compute-id', computeId, '--json']);
    await cli('compute status', ['compute', 'status', '--compute-id', computeId]);
    await cli('compute start again (error)', ['compute', 'start', '--compute-id', computeId, '--spec', specFile]);

    // A compute that fails: its pageserver connection string carries a password and leads nowhere.
    const failing = structuredClone(spec) as { spec: Record<string, unknown> };
    failing.spec.pageserver_connstring = `postgresql://cloud_admin:${leakedPassword}@127.0.0.1:${await freePort()}`;
    failing.spec.storage_auth_token = undefined;
    const failingFile = path.join(dir, 'failing.json');
    writeFileSync(failingFile, JSON.stringify(failing));
    const failingId = uniqueId('mask-fail');
    workers.push(await startComputeWorker(failingId, testPgdata()));
    await cli('failing compute start', ['compute', 'start', '--compute-id', failingId, '--spec', failingFile, '--wait', '--json']);
    await cli('failing compute status --json', ['compute', 'status', '--compute-id', failingId, '--json']);
    await cli('failing compute status', ['compute', 'status', '--compute-id', failingId]);
    await cli('compute list', ['compute', 'list', '--json']);

    expect((await cli('compute terminate', ['compute', 'terminate', '--compute-id', computeId, '--json'])).code).toBe(0);

    // An import through the stack's own importer worker, the connection string on stdin.
    const importId = uniqueId('mask');
    const imported = await cli(
      'import start',
      ['import', 'start', '--import-id', importId, '--source', '-', '--tenant', neonId(), '--timeline', neonId(), '--wait', '--json'],
      `${source.url()}\n`,
    );
    expect(imported.code, imported.stderr).toBe(0);
    await cli('import status --json', ['import', 'status', '--import-id', importId, '--json']);
    await cli('import status', ['import', 'status', '--import-id', importId]);
    // And one that fails on a wrong password (the right one's neighbour must not leak either).
    const badId = uniqueId('mask-bad');
    await cli('failing import', ['import', 'start', '--import-id', badId, '--source', '-', '--tenant', neonId(), '--timeline', neonId(), '--wait', '--json'], `${source.url(leakedPassword)}\n`);
    await cli('failing import status', ['import', 'status', '--import-id', badId, '--json']);

    const texts: { what: string; text: string }[] = outputs.flatMap(({ what, result }) => [
      { what: `${what} stdout`, text: result.stdout },
      { what: `${what} stderr`, text: result.stderr },
    ]);
    for (const [i, w] of workers.entries()) texts.push({ what: `compute worker ${i} log`, text: w.output() });
    // The stack's own workers: control plane, importer, import callback.
    for (const name of readdirSync(stack.stackDir).filter((n) => n.endsWith('.log'))) {
      texts.push({ what: `stack ${name}`, text: readFileSync(path.join(stack.stackDir, name), 'utf8') });
    }
    expect(texts.some((t) => /control-plane/.test(t.what))).toBe(true);
    // Something did go wrong, visibly: the failures are reported, only without their secrets.
    expect(outputs.find((o) => o.what === 'failing import')!.result.code).not.toBe(0);
    for (const { what, text } of texts) {
      for (const [name, value] of Object.entries(secrets)) {
        expect(text.includes(value), `${what} shows the ${name}`).toBe(false);
      }
    }
  }, 600_000);
});
