import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Client } from '@temporalio/client';
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import { NativeConnection, Worker } from '@temporalio/worker';
import { describe, expect, it } from 'vitest';
import { encryptedDataConverter } from '../common/codec/data-converter';
import { EncryptionCodec } from '../common/codec/encryption-codec';
import { computeWorkflowId } from '../model/compute-status';
import { exampleSpecFor, createTestTimeline } from './helpers/compute';
import { uniqueId, uniqueTaskQueue } from './helpers/ids';
import { testClient, testConfig } from './helpers/stack';
import { waitFor } from './helpers/wait';

const EventType = temporal.api.enums.v1.EventType;

describe('the payload codec refuses clear text when a key is configured', () => {
  it('decrypts its own payloads and refuses unencrypted ones without echoing them', async () => {
    const codec = new EncryptionCodec(randomBytes(32));
    const secret = { spec: { cluster: { postgresql_conf: "archive_command = 'curl evil'" } } };
    const plain = defaultPayloadConverter.toPayload(secret);
    const roundTrip = await codec.decode(await codec.encode([plain]));
    expect(defaultPayloadConverter.fromPayload(roundTrip[0]!)).toEqual(secret);

    const refused = codec.decode([plain]);
    await expect(refused).rejects.toThrow(/refused an unencrypted payload \(encoding "json\/plain"\)/);
    await expect(refused).rejects.not.toThrow(/curl evil/);
    // No metadata at all, and an undefined value (binary/null), are refused the same way.
    await expect(codec.decode([{ data: Buffer.from('{}') } as Payload])).rejects.toThrow(/unencrypted payload \(encoding "\(none\)"\)/);
    await expect(codec.decode([defaultPayloadConverter.toPayload(undefined)])).rejects.toThrow(/unencrypted payload \(encoding "binary\/null"\)/);
  });

  it('a compute workflow started by a client without the key fails its workflow task with a clear error and runs nothing', async () => {
    const timeline = await createTestTimeline();
    const { spec } = await exampleSpecFor(timeline);
    const computeId = uniqueId('plain');
    const config = testConfig();
    // A real Temporal client without the codec: what anyone with write access to the namespace has.
    const { client, close } = await testClient();
    try {
      const handle = await client.workflow.start('computeWorkflow', {
        taskQueue: config.temporal.controlPlaneTaskQueue,
        workflowId: computeWorkflowId(computeId),
        args: [{ computeId, config: spec, options: {} }],
      });
      try {
        const failed = await waitFor('a failed workflow task', async () => {
          const history = await handle.fetchHistory();
          return history.events?.find((e) => e.eventType === EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED);
        });
        // The failure is encrypted by the worker's failure converter: read it with the key.
        const codec = new EncryptionCodec(config.payloadKeys!.current);
        const failure = failed.workflowTaskFailedEventAttributes!.failure!;
        const [attributes] = await codec.decode([failure.encodedAttributes as Payload]);
        const message = (defaultPayloadConverter.fromPayload(attributes!) as { message: string }).message;
        expect(message).toMatch(/refused an unencrypted payload \(encoding "json\/plain"\)/);

        const history = await handle.fetchHistory();
        const types = (history.events ?? []).map((e) => e.eventType);
        // Nothing ran: no activity, no timer, no child, no completion.
        expect(types).not.toContain(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED);
        expect(types).not.toContain(EventType.EVENT_TYPE_TIMER_STARTED);
        expect(types).not.toContain(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED);
        expect(types).not.toContain(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED);
      } finally {
        await handle.terminate('test cleanup').catch(() => undefined);
      }
    } finally {
      await close();
    }
  });

  it('lets through the one clear-text payload the server writes itself: the details of an activity cancelled before it started', async () => {
    const codec = new EncryptionCodec(randomBytes(32));
    const serverDetails = defaultPayloadConverter.toPayload('ACTIVITY_ID_NOT_STARTED');
    expect(defaultPayloadConverter.fromPayload((await codec.decode([serverDetails]))[0]!)).toBe('ACTIVITY_ID_NOT_STARTED');
    // Only that exact value: anything else in clear text is still refused.
    await expect(codec.decode([defaultPayloadConverter.toPayload('ACTIVITY_ID_NOT_STARTED ')])).rejects.toThrow(/refused an unencrypted payload/);
    await expect(codec.decode([defaultPayloadConverter.toPayload({ reason: 'ACTIVITY_ID_NOT_STARTED' })])).rejects.toThrow(/refused an unencrypted payload/);

    // On the real server: a workflow that cancels an activity no worker started gets the server's
    // ActivityTaskCanceled event, clear text in its details, and goes on (before, its every
    // workflow task failed on that payload and it was stuck).
    const config = testConfig();
    const dataConverter = encryptedDataConverter(config.payloadKeys);
    const taskQueue = uniqueTaskQueue('cancel-unstarted');
    const connection = await NativeConnection.connect({ address: config.temporal.address });
    const { client: plainClient, close } = await testClient();
    const client = new Client({ connection: plainClient.connection, namespace: config.temporal.namespace, dataConverter });
    const worker = await Worker.create({
      connection,
      namespace: config.temporal.namespace,
      taskQueue,
      workflowsPath: fileURLToPath(new URL('./fixtures/workflows/cancel-unstarted.ts', import.meta.url)),
      dataConverter,
    });
    try {
      const result = await worker.runUntil(async () => {
        const handle = await client.workflow.start('cancelUnstartedActivityWorkflow', { taskQueue, workflowId: uniqueId('cancel-unstarted'), workflowExecutionTimeout: '60 seconds' });
        const outcome = await handle.result();
        const history = await handle.fetchHistory();
        const cancelled = history.events?.find((e) => e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED);
        const details = cancelled?.activityTaskCanceledEventAttributes?.details?.payloads?.[0];
        return { outcome, details: details ? Buffer.from(details.data ?? []).toString() : undefined, failedTasks: (history.events ?? []).filter((e) => e.eventType === EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED).length };
      });
      expect(result).toEqual({ outcome: 'cancelled', details: '"ACTIVITY_ID_NOT_STARTED"', failedTasks: 0 });
    } finally {
      await close();
      await connection.close();
    }
  }, 120_000);
});
