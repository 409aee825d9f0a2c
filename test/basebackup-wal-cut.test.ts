import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { extractTarStream } from '../drivers/archive/extract-tar';
import { findPostgres, pgBin } from '../common/pg-binaries';
import { chownForPostgres, pgSpawnIdentity } from '../common/pg-identity';
import { dataDirTar } from '../dev/storage/pageserver/basebackup-tar';
import { readControlFile, walSegmentName } from '../dev/storage/pg-control';

const run = promisify(execFile);
const scratch = mkdtempSync(path.join(os.tmpdir(), 'dc-walcut-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe("the dev pageserver's base backup", () => {
  it("sends the redo segment's WAL before the checkpoint's page as zeros, keeping its first page and everything from the redo page on", async () => {
    const install = findPostgres({ pgBinDir: process.env.PG_BIN_DIR });
    chownForPostgres(scratch);
    const data = path.join(scratch, 'data');
    await run(pgBin(install, 'initdb'), ['-D', data, '-U', 'postgres', '-A', 'trust', '--no-sync', '--locale', 'C'], pgSpawnIdentity());
    const control = readControlFile(data);
    const segment = `pg_wal/${walSegmentName(control.timelineId, control.redo, control.xlogSegSize)}`;
    const page = control.xlogBlcksz;
    const redoPage = Math.floor(Number(control.redo % BigInt(control.xlogSegSize)) / page) * page;
    // initdb writes megabytes of WAL before its shutdown checkpoint: there is something to cut.
    expect(redoPage).toBeGreaterThan(100 * page);

    const target = path.join(scratch, 'target');
    await extractTarStream(dataDirTar(data) as unknown as AsyncIterable<Buffer>, target, { maxBytes: 256 * 1024 * 1024 });

    const before = readFileSync(path.join(data, segment));
    const sent = readFileSync(path.join(target, segment));
    expect(sent.length).toBe(before.length);
    expect(sent.subarray(0, page).equals(before.subarray(0, page))).toBe(true);
    expect(sent.subarray(page, redoPage).equals(Buffer.alloc(redoPage - page))).toBe(true);
    expect(sent.subarray(redoPage).equals(before.subarray(redoPage))).toBe(true);
    // The rest of the data directory is sent as it is.
    expect(readFileSync(path.join(target, 'global', 'pg_control')).equals(readFileSync(path.join(data, 'global', 'pg_control')))).toBe(true);

    // Stock Postgres starts from it (with the postgresql.conf a compute writes itself): reads the
    // checkpoint, accepts connections, stops cleanly.
    writeFileSync(path.join(target, 'postgresql.conf'), "listen_addresses = ''\n");
    chownForPostgres(target);
    await run(pgBin(install, 'pg_ctl'), ['-D', target, '-w', '-t', '60', '-o', `-c port=54329 -c unix_socket_directories=${scratch}`, '-l', path.join(scratch, 'pg.log'), 'start'], pgSpawnIdentity());
    await run(pgBin(install, 'pg_ctl'), ['-D', target, '-w', '-m', 'fast', 'stop'], pgSpawnIdentity());
    expect(readFileSync(path.join(scratch, 'pg.log'), 'utf8')).toMatch(/database system is ready to accept connections/);
  });
});
