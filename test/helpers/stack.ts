import { Client, Connection } from '@temporalio/client';
import { inject } from 'vitest';
import type { AppConfig } from '../../common/config';
import { stackConfig, stackEnv } from '../../dev/private-stack';

/** Configuration pointing at the stack the global setup started (or was given). */
export function testConfig(extraEnv: Record<string, string> = {}): AppConfig {
  return stackConfig(inject('stack'), extraEnv);
}

/** Environment for child processes (workers, CLI) so they talk to the test stack. */
export function testEnv(): Record<string, string> {
  return stackEnv(inject('stack'));
}

export async function testClient(): Promise<{ client: Client; close: () => Promise<void> }> {
  const stack = inject('stack');
  const connection = await Connection.connect({ address: stack.temporal.address });
  return { client: new Client({ connection, namespace: stack.temporal.namespace }), close: () => connection.close() };
}
