/**
 * The page service: Neon's libpq commands on the pgwire server. `basebackup` streams the image's
 * precomputed tar (gunzipped on the fly without --gzip); `lease lsn` grants or renews an LSN
 * lease (one row, `valid_until` in milliseconds since the epoch; NULL when refused, as Neon).
 */
import { PassThrough, pipeline } from 'node:stream';
import { createGunzip, createGzip } from 'node:zlib';
import { isNeonId } from '../../../model/ids';
import { isLsn, parseLsn } from '../../../model/lsn';
import { PgWireError, type PgWireSession, type QueryResult } from '../pgwire/server';
import { dataDirTar } from './basebackup-tar';
import { PageserverError, type PageserverService } from './service';

function neonId(value: string | undefined, what: string): string {
  if (value === undefined) throw new PgWireError(`missing ${what}`, '42601');
  if (!isNeonId(value)) throw new PgWireError(`invalid ${what} ${JSON.stringify(value)}: expected 32 lower-case hex characters`, '22023');
  return value;
}

function lsnArg(value: string, what: string): bigint {
  if (!isLsn(value)) throw new PgWireError(`invalid ${what} ${JSON.stringify(value)}: expected an LSN like 0/16B5A50`, '22023');
  return parseLsn(value);
}

function wrap(err: unknown): never {
  if (err instanceof PageserverError) {
    throw new PgWireError(err.message, err.status === 404 ? '58P01' : err.status === 400 ? '22023' : 'XX000');
  }
  throw err;
}

async function basebackup(service: PageserverService, args: string[], log: (l: string) => void): Promise<QueryResult> {
  const positional = args.filter((a) => !a.startsWith('--'));
  const flags = args.filter((a) => a.startsWith('--'));
  const unknown = flags.filter((f) => f !== '--gzip' && f !== '--replica');
  if (unknown.length > 0) throw new PgWireError(`basebackup: unknown option ${unknown.join(' ')}`, '42601');
  if (positional.length < 2 || positional.length > 3) {
    throw new PgWireError('usage: basebackup <tenant_id> <timeline_id> [<lsn>] [--gzip] [--replica]', '42601');
  }
  const tenantId = neonId(positional[0], 'tenant_id');
  const timelineId = neonId(positional[1], 'timeline_id');
  const lsn = positional[2] === undefined ? undefined : lsnArg(positional[2], 'LSN');
  const gzip = flags.includes('--gzip');
  const started = Date.now();
  const { image, source } = await service.imageForBasebackup(tenantId, timelineId, lsn).catch(wrap);
  // A primary will write WAL: have its image ready for the next start once it is gone.
  if (!flags.includes('--replica')) service.watchForIngest(tenantId, timelineId);
  log(`basebackup ${tenantId}/${timelineId} at ${image.lsn}${gzip ? ' (gzip)' : ''}: image ready in ${Date.now() - started} ms`);
  // pipeline() destroys every stream if one fails or the client goes away.
  if (source.kind === 'tarball') {
    const file = source.file.createReadStream();
    return { kind: 'copyOut', stream: gzip ? file : pipeline(file, createGunzip(), () => undefined) };
  }
  const packed = pipeline(dataDirTar(source.pgdata), gzip ? createGzip({ level: 1 }) : new PassThrough(), () => undefined);
  packed.once('close', source.release);
  return { kind: 'copyOut', stream: packed };
}

export function createPageServiceHandler(service: PageserverService, log: (line: string) => void) {
  return async function onQuery(_session: PgWireSession, sql: string): Promise<QueryResult> {
    const words = sql.trim().replace(/;\s*$/, '').split(/\s+/).filter(Boolean);
    const command = (words[0] ?? '').toLowerCase();
    if (command === 'basebackup') return basebackup(service, words.slice(1), log);
    if (command === 'lease' && (words[1] ?? '').toLowerCase() === 'lsn') {
      if (words.length !== 5) throw new PgWireError('usage: lease lsn <tenant_shard_id> <timeline_id> <lsn>', '42601');
      const tenantId = neonId(words[2]!.split('-')[0], 'tenant_shard_id');
      const timelineId = neonId(words[3], 'timeline_id');
      const lsn = lsnArg(words[4]!, 'LSN');
      try {
        const { validUntil } = await service.gc.leaseLsn(tenantId, timelineId, lsn);
        return { kind: 'rows', columns: ['valid_until'], rows: [[String(validUntil)]], tag: 'SELECT 1' };
      } catch (err) {
        // Neon answers a lease it will not grant with NULL, not an error; the reason goes to the log.
        if (!(err instanceof PageserverError) || err.status !== 400) wrap(err);
        log(`lease lsn refused: ${err.message}`);
        return { kind: 'rows', columns: ['valid_until'], rows: [[null]], tag: 'SELECT 1' };
      }
    }
    throw new PgWireError(`unsupported command: ${JSON.stringify(sql.trim().slice(0, 100))}`, '0A000');
  };
}
