/**
 * Encoders for the backend messages of the PostgreSQL v3 wire protocol that the dev storage
 * servers send. Every function returns one complete frame (type byte, int32 length, body).
 */

const TEXT_TYPE_OID = 25;

function frame(type: string, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = type.charCodeAt(0);
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

function cstring(text: string): Buffer {
  return Buffer.concat([Buffer.from(text, 'utf8'), Buffer.from([0])]);
}

function int32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeInt32BE(n, 0);
  return b;
}

function int16(n: number): Buffer {
  const b = Buffer.allocUnsafe(2);
  b.writeInt16BE(n, 0);
  return b;
}

export const authenticationOk = (): Buffer => frame('R', int32(0));
export const authenticationCleartextPassword = (): Buffer => frame('R', int32(3));
export const parameterStatus = (name: string, value: string): Buffer => frame('S', Buffer.concat([cstring(name), cstring(value)]));
export const backendKeyData = (pid: number, secret: number): Buffer => frame('K', Buffer.concat([int32(pid), int32(secret)]));
export const readyForQuery = (): Buffer => frame('Z', Buffer.from('I'));
export const commandComplete = (tag: string): Buffer => frame('C', cstring(tag));
export const emptyQueryResponse = (): Buffer => frame('I', Buffer.alloc(0));
export const copyDone = (): Buffer => frame('c', Buffer.alloc(0));

/** CopyOutResponse / CopyBothResponse: binary format, zero columns (a raw byte stream). */
export const copyOutResponse = (): Buffer => frame('H', Buffer.concat([Buffer.from([1]), int16(0)]));
export const copyBothResponse = (): Buffer => frame('W', Buffer.concat([Buffer.from([1]), int16(0)]));

/** The CopyData header alone, so a large payload is written without copying it into a new buffer. */
export function copyDataHeader(payloadLength: number): Buffer {
  const out = Buffer.allocUnsafe(5);
  out[0] = 'd'.charCodeAt(0);
  out.writeInt32BE(4 + payloadLength, 1);
  return out;
}

export function rowDescription(columns: string[]): Buffer {
  const parts: Buffer[] = [int16(columns.length)];
  for (const name of columns) {
    // table oid 0, attnum 0, type text, typlen -1 (varlena), typmod -1, text format
    parts.push(cstring(name), int32(0), int16(0), int32(TEXT_TYPE_OID), int16(-1), int32(-1), int16(0));
  }
  return frame('T', Buffer.concat(parts));
}

export function dataRow(values: (string | null)[]): Buffer {
  const parts: Buffer[] = [int16(values.length)];
  for (const v of values) {
    if (v === null) {
      parts.push(int32(-1));
    } else {
      const bytes = Buffer.from(v, 'utf8');
      parts.push(int32(bytes.length), bytes);
    }
  }
  return frame('D', Buffer.concat(parts));
}

/** ErrorResponse; severity ERROR keeps the session, FATAL precedes closing the connection. */
export function errorResponse(severity: 'ERROR' | 'FATAL', code: string, message: string): Buffer {
  return frame(
    'E',
    Buffer.concat([
      Buffer.from('S'),
      cstring(severity),
      Buffer.from('V'),
      cstring(severity),
      Buffer.from('C'),
      cstring(code),
      Buffer.from('M'),
      cstring(message),
      Buffer.from([0]),
    ]),
  );
}

/** Splits the key\0value\0...\0 list of a StartupMessage body (after the protocol code). */
export function parseStartupParams(body: Buffer): Record<string, string> {
  const params: Record<string, string> = {};
  const fields = body.toString('utf8').split('\0');
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const key = fields[i]!;
    if (key === '') break;
    params[key] = fields[i + 1]!;
  }
  return params;
}

/**
 * The `options` startup parameter as libpq sends it: whitespace separated, backslash escapes.
 * `-c key=value`, `-ckey=value`, `--key=value` and (as Neon's servers accept) bare `key=value`
 * tokens all become settings.
 */
export function parseOptions(options: string): Record<string, string> {
  const tokens: string[] = [];
  let current = '';
  let inToken = false;
  for (let i = 0; i < options.length; i++) {
    const ch = options[i]!;
    if (ch === '\\' && i + 1 < options.length) {
      current += options[++i];
      inToken = true;
    } else if (/\s/.test(ch)) {
      if (inToken) tokens.push(current);
      current = '';
      inToken = false;
    } else {
      current += ch;
      inToken = true;
    }
  }
  if (inToken) tokens.push(current);

  const settings: Record<string, string> = {};
  const assign = (pair: string) => {
    const eq = pair.indexOf('=');
    if (eq > 0) settings[pair.slice(0, eq).replaceAll('-', '_')] = pair.slice(eq + 1);
  };
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (t === '-c') assign(tokens[++i] ?? '');
    else if (t.startsWith('--')) assign(t.slice(2));
    else if (t.startsWith('-c')) assign(t.slice(2));
    else assign(t);
  }
  return settings;
}
