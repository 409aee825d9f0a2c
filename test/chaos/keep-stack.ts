/** Starts a private stack on free ports in the directory given and leaves it running (`npm run chaos -- --stack-dir <dir>` for quicker runs). */
import { chmodSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { startPrivateStack } from '../../dev/private-stack';

const dir = path.resolve(process.argv[2] ?? '');
if (!process.argv[2]) throw new Error('usage: keep-stack.ts <dir>');
mkdirSync(dir, { recursive: true });
chmodSync(dir, 0o755);
console.log(JSON.stringify(await startPrivateStack(dir)));
