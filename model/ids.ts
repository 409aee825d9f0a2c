/** Neon tenant and timeline IDs: 32 lower-case hex characters. */
const NEON_ID = /^[0-9a-f]{32}$/;

export function isNeonId(text: string): boolean {
  return NEON_ID.test(text);
}

export function assertNeonId(text: string, what: string): string {
  if (!isNeonId(text)) throw new RangeError(`${what} must be 32 lower-case hex characters, got ${JSON.stringify(text)}`);
  return text;
}
