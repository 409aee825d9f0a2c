import { readFileSync } from 'node:fs';

/**
 * A secret kept in a file (a token, a key): its one line, without surrounding whitespace. Files
 * keep secrets out of command lines and environment dumps. Errors name the file, never its content.
 */
export function readSecretFile(file: string, what: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read the ${what} file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const secret = text.trim();
  if (secret === '') throw new Error(`the ${what} file ${file} is empty`);
  if (/\s/.test(secret)) throw new Error(`the ${what} file ${file} must hold one token without spaces or line breaks`);
  return secret;
}

/** A service's `--auth-token T` or `--auth-token-file F` (the file keeps it out of process listings); at most one. */
export function authTokenOption(token: string | undefined, file: string | undefined): string | undefined {
  if (token !== undefined && file !== undefined) throw new Error('give --auth-token or --auth-token-file, not both');
  return file !== undefined ? readSecretFile(file, '--auth-token-file') : token;
}
