import { z } from 'zod';
import { DecryptionError, KeyUnavailableError, type KeyKind, type KeyProviders } from './key-provider';

/**
 * spec.json at the root of an import prefix, in Neon's shape: the connection strings travel only
 * as ciphertext, and `encryption_secret` names the key (externally tagged, as serde writes it).
 */
const keyRef = z.object({ key_id: z.string().min(1).max(2048) }).strict();
const base64 = z
  .string()
  .min(1)
  .regex(/^[A-Za-z0-9+/]+={0,2}$/, 'expected base64');

export const importSpecSchema = z
  .object({
    encryption_secret: z.union([z.object({ KMS: keyRef }).strict(), z.object({ Local: keyRef }).strict()]),
    source_connstring_ciphertext_base64: base64,
    destination_connstring_ciphertext_base64: base64.optional(),
  })
  .loose();

export type ImportSpec = z.infer<typeof importSpecSchema>;

/** A spec that does not parse: never retried, and its error names the field at fault. */
export class InvalidImportSpecError extends Error {
  override name = 'InvalidImportSpecError';
}

export function parseImportSpec(text: string, where = 'spec.json'): ImportSpec {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new InvalidImportSpecError(`${where} is not valid JSON: ${(err as Error).message}`);
  }
  const parsed = importSpecSchema.safeParse(json);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new InvalidImportSpecError(`${where} is not a valid import spec: ${problems}`);
  }
  return parsed.data;
}

export function specKey(spec: ImportSpec): { kind: KeyKind; keyId: string } {
  const secret = spec.encryption_secret;
  return 'KMS' in secret ? { kind: 'KMS', keyId: secret.KMS.key_id } : { kind: 'Local', keyId: secret.Local.key_id };
}

function providerFor(providers: KeyProviders, kind: KeyKind) {
  const provider = providers[kind];
  if (!provider) throw new KeyUnavailableError(`The import spec is encrypted with a ${kind} key, and this importer has no ${kind} key provider configured`);
  return provider;
}

/** Builds spec.json content, encrypting the connection strings under the named key. */
export async function buildImportSpec(opts: {
  providers: KeyProviders;
  kind: KeyKind;
  keyId: string;
  sourceConnstring: string;
  destinationConnstring?: string;
}): Promise<ImportSpec> {
  const provider = providerFor(opts.providers, opts.kind);
  const enc = async (s: string) => (await provider.encrypt(Buffer.from(s, 'utf8'), opts.keyId)).toString('base64');
  const spec: ImportSpec = {
    encryption_secret: opts.kind === 'KMS' ? { KMS: { key_id: opts.keyId } } : { Local: { key_id: opts.keyId } },
    source_connstring_ciphertext_base64: await enc(opts.sourceConnstring),
  };
  if (opts.destinationConnstring !== undefined) spec.destination_connstring_ciphertext_base64 = await enc(opts.destinationConnstring);
  return spec;
}

/** The source connection string in clear text; keep it in memory only, and mask it in any message. */
export async function decryptSourceConnstring(spec: ImportSpec, providers: KeyProviders): Promise<string> {
  const { kind, keyId } = specKey(spec);
  const plaintext = await providerFor(providers, kind).decrypt(Buffer.from(spec.source_connstring_ciphertext_base64, 'base64'), keyId);
  const text = plaintext.toString('utf8');
  if (!/^(postgres(ql)?:\/\/|\s*\w+\s*=)/i.test(text)) {
    // Nothing of the plaintext is shown: whatever it is, it may be secret.
    throw new DecryptionError('The decrypted source connection string is neither a postgres:// URL nor key=value conninfo');
  }
  return text;
}
