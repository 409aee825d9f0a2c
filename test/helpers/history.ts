/**
 * Everything readable in a workflow history as the server stores it: every string field and every
 * payload's bytes decoded as UTF-8, plus each payload's encoding. Used to prove secrets are absent.
 */
export function historyTexts(history: unknown): { texts: string[]; payloadEncodings: { path: string; encoding: string }[] } {
  const texts: string[] = [];
  const payloadEncodings: { path: string; encoding: string }[] = [];
  const visit = (value: unknown, at = ''): void => {
    if (value === null || value === undefined) return;
    if (typeof value === 'string') {
      texts.push(value);
      return;
    }
    if (value instanceof Uint8Array) {
      texts.push(Buffer.from(value).toString('utf8'));
      return;
    }
    if (Array.isArray(value)) {
      value.forEach((v, i) => visit(v, `${at}[${i}]`));
      return;
    }
    if (typeof value === 'object') {
      const record = value as Record<string, unknown>;
      if (record.data instanceof Uint8Array && record.metadata && typeof record.metadata === 'object') {
        const encoding = (record.metadata as Record<string, unknown>).encoding;
        if (encoding instanceof Uint8Array) payloadEncodings.push({ path: at, encoding: Buffer.from(encoding).toString('utf8') });
      }
      for (const [key, v] of Object.entries(record)) visit(v, `${at}.${key}`);
    }
  };
  visit(history);
  return { texts, payloadEncodings };
}
