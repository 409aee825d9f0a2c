import path from 'node:path';
import { Connection } from '@temporalio/client';
import { projectRoot, tsNodeArgs } from '../common/paths';
import { SEARCH_ATTRIBUTES } from '../common/search-attributes';
import { spawnDetached, type TrackedProcess } from './processes';
import type { StackSettings } from './stack-settings';

/** One long-running process of the embedded stack. */
export interface StackComponent {
  name: string;
  /** The ports it binds, checked before it starts so a clash is an error rather than a hang. */
  portKeys: (keyof StackSettings['ports'])[];
  start(s: StackSettings, ctx: { temporalCli: string }): TrackedProcess;
  /** Resolves once the component accepts work; rejects with the reason otherwise. */
  probe(s: StackSettings): Promise<void>;
  readyTimeoutMs: number;
}

async function httpOk(url: string): Promise<void> {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
  await res.arrayBuffer();
  if (res.status !== 200) throw new Error(`${url} answered ${res.status}`);
}

export const temporalComponent: StackComponent = {
  name: 'temporal',
  portKeys: ['temporal', 'temporalUi'],
  start(s, { temporalCli }) {
    const args = [
      'server',
      'start-dev',
      '--ip',
      s.host,
      '--port',
      String(s.ports.temporal),
      '--ui-port',
      String(s.ports.temporalUi),
      // A file, so running workflows survive a stack restart.
      '--db-filename',
      path.join(s.dir, 'temporal.db'),
      '--namespace',
      s.namespace,
      '--log-level',
      'warn',
      ...Object.entries(SEARCH_ATTRIBUTES).flatMap(([name, type]) => ['--search-attribute', `${name}=${type}`]),
    ];
    return spawnDetached(temporalCli, args, { log: path.join(s.dir, 'temporal.log') });
  },
  async probe(s) {
    const connection = await Connection.connect({ address: `${s.host}:${s.ports.temporal}`, connectTimeout: '2s' });
    try {
      await connection.workflowService.describeNamespace({ namespace: s.namespace });
    } finally {
      await connection.close();
    }
    await httpOk(`http://${s.host}:${s.ports.temporalUi}/`);
  },
  readyTimeoutMs: 90_000,
};

export const s3Component: StackComponent = {
  name: 's3',
  portKeys: ['s3'],
  start(s) {
    const args = [
      ...tsNodeArgs(),
      path.join(projectRoot, 'dev', 's3-server-main.ts'),
      '--host',
      s.host,
      '--port',
      String(s.ports.s3),
      '--dir',
      path.join(s.dir, 's3'),
      '--bucket',
      s.bucket,
    ];
    return spawnDetached(process.execPath, args, { log: path.join(s.dir, 's3.log'), cwd: projectRoot });
  },
  async probe(s) {
    await httpOk(`http://${s.host}:${s.ports.s3}/`);
  },
  readyTimeoutMs: 30_000,
};

/** In start order. */
export const STACK_COMPONENTS: StackComponent[] = [temporalComponent, s3Component];
