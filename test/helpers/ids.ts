import { randomUUID } from 'node:crypto';

/** IDs and task queues unique per test, so tests sharing one Temporal server never see each other's work. */
export function uniqueId(prefix: string): string {
  return `${prefix}-${randomUUID().slice(0, 12)}`;
}

export function uniqueTaskQueue(prefix = 'test'): string {
  return uniqueId(`${prefix}-queue`);
}

/** A 32-hex-char Neon ID (tenant, timeline). */
export function neonId(): string {
  return randomUUID().replaceAll('-', '');
}
