/**
 * Splits the password out of a libpq connection string (URL or key=value form) so the rest can go
 * on a command line and the password through the child's environment (PGPASSWORD), never argv.
 */
export interface SplitConnstring {
  /** The connection string without any password. */
  withoutPassword: string;
  password?: string;
}

export class ConnstringError extends Error {
  override name = 'ConnstringError';
}

function decodeComponent(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw new ConnstringError('The connection string URL has invalid percent-encoding');
  }
}

function splitUrl(connstring: string): SplitConnstring {
  const scheme = /^postgres(?:ql)?:\/\//i.exec(connstring)![0];
  const rest = connstring.slice(scheme.length);
  const authorityEnd = rest.search(/[/?]/);
  const authority = authorityEnd === -1 ? rest : rest.slice(0, authorityEnd);
  let tail = authorityEnd === -1 ? '' : rest.slice(authorityEnd);
  let password: string | undefined;
  let hostPart = authority;
  const at = authority.lastIndexOf('@');
  if (at !== -1) {
    const userinfo = authority.slice(0, at);
    hostPart = authority.slice(at + 1);
    const colon = userinfo.indexOf(':');
    const user = colon === -1 ? userinfo : userinfo.slice(0, colon);
    if (colon !== -1) password = decodeComponent(userinfo.slice(colon + 1));
    hostPart = `${user}@${hostPart}`;
  }
  const q = tail.indexOf('?');
  if (q !== -1) {
    const kept: string[] = [];
    for (const pair of tail.slice(q + 1).split('&')) {
      const name = decodeComponent(pair.split('=')[0] ?? '');
      if (name === 'password') password = decodeComponent(pair.slice(pair.indexOf('=') + 1));
      else if (pair !== '') kept.push(pair);
    }
    tail = tail.slice(0, q) + (kept.length ? `?${kept.join('&')}` : '');
  }
  return { withoutPassword: `${scheme}${hostPart}${tail}`, password };
}

/** Parses key=value conninfo as libpq does: values bare or single-quoted, backslash escapes. */
export function parseKeyValueConninfo(text: string): [string, string][] {
  const pairs: [string, string][] = [];
  let i = 0;
  const skipSpace = () => {
    while (i < text.length && /\s/.test(text[i]!)) i++;
  };
  for (;;) {
    skipSpace();
    if (i >= text.length) return pairs;
    const keyStart = i;
    while (i < text.length && /[A-Za-z0-9_]/.test(text[i]!)) i++;
    const key = text.slice(keyStart, i);
    skipSpace();
    if (!key || text[i] !== '=') throw new ConnstringError(`The connection string is not valid key=value conninfo (near character ${keyStart + 1})`);
    i++;
    skipSpace();
    let value = '';
    if (text[i] === "'") {
      i++;
      for (;;) {
        if (i >= text.length) throw new ConnstringError(`Unterminated quoted value for ${key} in the connection string`);
        const c = text[i++]!;
        if (c === '\\' && i < text.length) value += text[i++];
        else if (c === "'") break;
        else value += c;
      }
    } else {
      while (i < text.length && !/\s/.test(text[i]!)) {
        const c = text[i++]!;
        if (c === '\\' && i < text.length) value += text[i++];
        else value += c;
      }
    }
    pairs.push([key, value]);
  }
}

export function quoteConninfoValue(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

export function formatKeyValueConninfo(pairs: [string, string][]): string {
  return pairs.map(([k, v]) => `${k}=${quoteConninfoValue(v)}`).join(' ');
}

export function splitPassword(connstring: string): SplitConnstring {
  const trimmed = connstring.trim();
  if (/^postgres(?:ql)?:\/\//i.test(trimmed)) return splitUrl(trimmed);
  const pairs = parseKeyValueConninfo(trimmed);
  const password = pairs.filter(([k]) => k === 'password').at(-1)?.[1];
  return { withoutPassword: formatKeyValueConninfo(pairs.filter(([k]) => k !== 'password')), password };
}
