/**
 * The dev endpoint storage's signing keys and the tokens made with them. In Neon the control
 * plane signs a token per compute and endpoint storage verifies it with the public key from its
 * `pemfile`; here the dev stack plays the control plane: it keeps an Ed25519 key pair in the
 * stack directory (private key mode 0600) and mints tokens for tests and the CLI.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { generateKeyPairSync } from 'node:crypto';
import path from 'node:path';
import { importPKCS8, SignJWT } from 'jose';

export const devEndpointStoragePrivateKeyFile = (stackDir: string): string => path.join(stackDir, 'endpoint-storage.key');
export const devEndpointStoragePublicKeyFile = (stackDir: string): string => path.join(stackDir, 'endpoint-storage.pub');

/** Makes the stack's key pair once; later starts keep it, so tokens minted earlier stay valid. */
export function ensureEndpointStorageKeys(stackDir: string): void {
  const priv = devEndpointStoragePrivateKeyFile(stackDir);
  const pub = devEndpointStoragePublicKeyFile(stackDir);
  if (existsSync(priv) && existsSync(pub)) return;
  const { privateKey, publicKey } = generateKeyPairSync('ed25519', {
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  writeFileSync(priv, privateKey, { mode: 0o600 });
  writeFileSync(pub, publicKey, { mode: 0o644 });
}

/** What endpoint storage's object routes check against the path (Neon's EndpointStorageClaims). */
export interface EndpointStorageClaims {
  tenant_id: string;
  timeline_id: string;
  endpoint_id: string;
}

/** Signs an EdDSA token scoped to one endpoint, valid for `ttlSeconds` (default one day). */
export async function mintEndpointStorageToken(privateKeyPem: string, claims: EndpointStorageClaims, ttlSeconds = 86_400): Promise<string> {
  const key = await importPKCS8(privateKeyPem, 'EdDSA');
  return new SignJWT({ ...claims })
    .setProtectedHeader({ alg: 'EdDSA', typ: 'JWT' })
    .setExpirationTime(Math.floor(Date.now() / 1000) + ttlSeconds)
    .sign(key);
}

/** A token signed with the dev stack's key in `stackDir`. */
export function mintDevEndpointStorageToken(stackDir: string, claims: EndpointStorageClaims, ttlSeconds?: number): Promise<string> {
  return mintEndpointStorageToken(readFileSync(devEndpointStoragePrivateKeyFile(stackDir), 'utf8'), claims, ttlSeconds);
}
