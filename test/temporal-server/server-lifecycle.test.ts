import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { afterAll, describe, expect, it } from 'vitest';
import { processStartTime } from '../../common/process-start-time';
import { canConnect } from '../../dev/processes';
import { sqlTemporalServerStatus, startSqlTemporalServer, stopSqlTemporalServer, type SqlTemporalServer } from '../../dev/temporal-server/server';

// Runs only in `npm run test:temporal-server` (it needs the server build): a server of its own,
// in its own directory, beside the one the stack runs on.
describe('the production Temporal server on PostgreSQL', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dc-tserver-'));
  afterAll(async () => {
    await stopSqlTemporalServer(dir);
    rmSync(dir, { recursive: true, force: true });
  });

  async function withClient<T>(server: SqlTemporalServer, fn: (client: Client) => Promise<T>): Promise<T> {
    const connection = await Connection.connect({ address: server.address });
    try {
      return await fn(new Client({ connection, namespace: server.namespace }));
    } finally {
      await connection.close();
    }
  }

  it('keeps workflows and search attributes across a stop and a start, and stops exactly what it started', async () => {
    let server = await startSqlTemporalServer({ dir });
    await withClient(server, (client) =>
      client.workflow.start('noSuchWorkflowType', {
        taskQueue: 'nobody-polls-this',
        workflowId: 'kept-across-restart',
        searchAttributes: { ComputeId: ['compute-kept'] },
      }),
    );
    // The Prometheus endpoint counts the start as a billable action.
    const metrics = await (await fetch(server.metricsUrl)).text();
    expect(metrics).toMatch(/^action\{[^}]*namespace="default"[^}]*\} [1-9]/m);

    const before = sqlTemporalServerStatus(dir)!;
    expect(Object.keys(before.processes).sort()).toEqual(['temporal-postgres', 'temporal-server']);
    expect(Object.values(before.processes).every((p) => p.running)).toBe(true);
    await server.stop();
    const [host, port] = server.address.split(':');
    expect(await canConnect(host!, Number(port))).toBe(false);
    for (const p of Object.values(before.processes)) expect(processStartTime(p.pid)).toBeUndefined();
    expect(sqlTemporalServerStatus(dir)!.processes).toEqual({});

    server = await startSqlTemporalServer({ dir });
    expect(server.address).toBe(`${host}:${port}`);
    await withClient(server, async (client) => {
      expect((await client.workflow.getHandle('kept-across-restart').describe()).status.name).toBe('RUNNING');
      const found: string[] = [];
      for await (const w of client.workflow.list({ query: "ComputeId = 'compute-kept'" })) found.push(w.workflowId);
      expect(found).toEqual(['kept-across-restart']);
      await client.workflow.getHandle('kept-across-restart').terminate('test done');
    });
  });
});
