import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { ArchiveError, extractTarStream } from '../drivers/archive/extract-tar';
import { checkSymlinkTarget, entryComponents } from '../drivers/archive/entry-paths';
import { findPostgres, pgBin } from '../common/pg-binaries';
import { chownForPostgres, pgSpawnIdentity } from '../common/pg-identity';
import { blocks, chunked, END_OF_ARCHIVE, packEntries, paxHeader, rawHeader, type CraftedEntry } from './fixtures/tar-crafting';

const run = promisify(execFile);
const MiB = 1024 * 1024;

let scratch: string;
let n = 0;
/** A fresh target directory inside `scratch/box-N/target`, with `scratch/box-N` standing for "outside". */
function freshTarget(): { target: string; outside: string } {
  const box = path.join(scratch, `box-${++n}`);
  mkdirSync(box);
  return { target: path.join(box, 'target'), outside: box };
}

async function extractEntries(entries: CraftedEntry[], target: string, maxBytes = 16 * MiB) {
  return extractTarStream(chunked(await packEntries(entries), 1000), target, { maxBytes });
}

/** The rejection, with the code and entry checked by the caller. */
async function rejection(p: Promise<unknown>): Promise<ArchiveError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'extraction should have failed').toBeInstanceOf(ArchiveError);
  return err as ArchiveError;
}

function listTree(root: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const name of readdirSync(path.join(root, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const st = lstatSync(path.join(root, r));
      if (st.isDirectory()) {
        out.push(`${r}/`);
        walk(r);
      } else if (st.isSymbolicLink()) out.push(`${r} -> ${readlinkSync(path.join(root, r))}`);
      else out.push(`${r} ${createHash('sha256').update(readFileSync(path.join(root, r))).digest('hex').slice(0, 16)}`);
    }
  };
  walk('');
  return out;
}

beforeAll(() => {
  scratch = mkdtempSync(path.join(os.tmpdir(), 'dc-untar-'));
});

afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

describe('entry name rules', () => {
  it('normalises harmless forms and refuses escapes', () => {
    expect(entryComponents('./a//b/')).toEqual(['a', 'b']);
    expect(entryComponents('./')).toEqual([]);
    expect(() => entryComponents('/etc/passwd')).toThrow(/absolute/);
    expect(() => entryComponents('a/../../b')).toThrow(/\.\./);
    expect(() => entryComponents('a\\b')).toThrow(/backslash/);
    expect(() => entryComponents('a\0b')).toThrow(/NUL/);
    expect(() => entryComponents('')).toThrow(/empty/);
  });

  it('allows link targets that stay inside and refuses the rest', () => {
    expect(() => checkSymlinkTarget(['a', 'b'], '../../c')).not.toThrow();
    expect(() => checkSymlinkTarget(['a', 'b'], 'c/d')).not.toThrow();
    expect(() => checkSymlinkTarget(['a'], '../../c')).toThrow(/outside/);
    expect(() => checkSymlinkTarget([], '/etc')).toThrow(/absolute/);
    expect(() => checkSymlinkTarget(['a'], 'x/../..')).toThrow(/after a normal component/);
  });
});

describe('extractTarStream', () => {
  it('extracts a real initdb data directory made by tar, byte for byte, with private directories', async () => {
    const install = findPostgres({ pgBinDir: process.env.PG_BIN_DIR });
    // initdb runs as the postgres user when we are root: give it a directory of its own it can reach.
    const src = mkdtempSync(path.join(os.tmpdir(), 'dc-untar-initdb-'));
    chownForPostgres(src);
    onTestFinished(() => rmSync(src, { recursive: true, force: true }));
    await run(pgBin(install, 'initdb'), ['-D', path.join(src, 'data'), '-U', 'postgres', '-A', 'trust', '--no-sync', '--locale', 'C'], pgSpawnIdentity());
    const dataDir = path.join(src, 'data');
    const tarProc = spawn('tar', ['-C', dataDir, '-cf', '-', '.'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const { target } = freshTarget();
    const result = await extractTarStream(tarProc.stdout, target, { maxBytes: 256 * MiB });
    expect(listTree(target)).toEqual(listTree(dataDir));
    expect(result.files).toBeGreaterThan(500);
    expect(result.bytes).toBeGreaterThan(10 * MiB);
    expect(statSync(target).mode & 0o777).toBe(0o700);
    expect(statSync(path.join(target, 'base')).mode & 0o777).toBe(0o700);
    expect(readFileSync(path.join(target, 'PG_VERSION'), 'utf8').trim()).toBe(String(install.major));
  });

  it('accepts an empty archive and zero-length files, but not a zero-byte stream', async () => {
    const a = freshTarget();
    expect(await extractEntries([], a.target)).toMatchObject({ files: 0, entries: 0 });
    const b = freshTarget();
    expect(await extractEntries([{ name: 'empty', content: '' }], b.target)).toMatchObject({ files: 1, bytes: 0 });
    expect(statSync(path.join(b.target, 'empty')).size).toBe(0);
    const c = freshTarget();
    const err = await rejection(extractTarStream(Readable.from([]), c.target, { maxBytes: MiB }));
    expect(err.code).toBe('truncated');
    expect(err.message).toMatch(/empty/);
  });

  it('leaves zero blocks as holes: the same bytes read back, fewer blocks on disk', async () => {
    const { target } = freshTarget();
    // Zero runs at the start, between data (unaligned to the 1000-byte chunks fed in), and at the end.
    const data = Buffer.alloc(3 * MiB);
    data.fill(7, 1 * MiB + 100, 1 * MiB + 5000);
    data.fill(9, 2 * MiB - 3, 2 * MiB + 2);
    const tail = Buffer.alloc(4096 + 10, 0);
    tail[5] = 1;
    expect(await extractEntries([{ name: 'sparse', content: data }, { name: 'zeros', content: Buffer.alloc(MiB) }, { name: 'tail', content: tail }], target)).toMatchObject({ files: 3 });
    expect(readFileSync(path.join(target, 'sparse')).equals(data)).toBe(true);
    expect(readFileSync(path.join(target, 'zeros')).equals(Buffer.alloc(MiB))).toBe(true);
    expect(readFileSync(path.join(target, 'tail')).equals(tail)).toBe(true);
    // st_blocks counts 512-byte units actually allocated: a few data blocks, not 3 MiB.
    expect(statSync(path.join(target, 'sparse')).blocks * 512).toBeLessThan(64 * 1024);
    expect(statSync(path.join(target, 'zeros')).size).toBe(MiB);
  });

  it('refuses an absolute path and writes nothing there', async () => {
    const { target, outside } = freshTarget();
    const victim = path.join(outside, 'absolute-victim');
    const err = await rejection(extractEntries([{ name: victim, content: 'owned' }], target));
    expect(err.code).toBe('unsafe-entry');
    expect(err.entry).toBe(victim);
    expect(err.message).toContain('absolute path');
    expect(existsSync(victim)).toBe(false);
  });

  it('refuses a ../ escape', async () => {
    const { target, outside } = freshTarget();
    const err = await rejection(extractEntries([{ name: 'ok', content: 'x' }, { name: 'sub/../../escaped', content: 'owned' }], target));
    expect(err.code).toBe('unsafe-entry');
    expect(err.entry).toBe('sub/../../escaped');
    expect(existsSync(path.join(outside, 'escaped'))).toBe(false);
  });

  it('refuses a symlink pointing out, and a file written through an inside symlink', async () => {
    const a = freshTarget();
    const out = await rejection(extractEntries([{ name: 'out', type: 'symlink', linkname: '../..' }], a.target));
    expect(out.entry).toBe('out');
    expect(out.message).toMatch(/outside/);
    const abs = await rejection(extractEntries([{ name: 'etc', type: 'symlink', linkname: '/etc' }], freshTarget().target));
    expect(abs.message).toMatch(/absolute link target/);

    // An inside link is fine, but nothing may be written through it: the check does not rely on the link's target.
    const b = freshTarget();
    const through = await rejection(
      extractEntries(
        [
          { name: 'dir', type: 'directory' },
          { name: 'here', type: 'symlink', linkname: 'dir' },
          { name: 'here/file', content: 'x' },
        ],
        b.target,
      ),
    );
    expect(through.entry).toBe('here/file');
    expect(through.message).toMatch(/through the symbolic link "here"/);
  });

  it('refuses a symlink chain that only escapes when resolved', async () => {
    const { target, outside } = freshTarget();
    const err = await rejection(
      extractEntries(
        [
          { name: 'd', type: 'directory' },
          { name: 'd/up', type: 'symlink', linkname: '..' },
          { name: 'escape', type: 'symlink', linkname: 'd/up/..' },
        ],
        target,
      ),
    );
    expect(err.entry).toBe('escape');
    expect(existsSync(path.join(outside, 'escape'))).toBe(false);
  });

  it('refuses hard links out of the target or to missing files, and keeps a valid one', async () => {
    const { target, outside } = freshTarget();
    writeFileSync(path.join(outside, 'secret'), 'outside data');
    const out = await rejection(extractEntries([{ name: 'grab', type: 'link', linkname: '../secret' }], target));
    expect(out.entry).toBe('grab');
    const abs = await rejection(extractEntries([{ name: 'grab', type: 'link', linkname: path.join(outside, 'secret') }], freshTarget().target));
    expect(abs.message).toMatch(/absolute/);
    const missing = await rejection(extractEntries([{ name: 'grab', type: 'link', linkname: 'nothing' }], freshTarget().target));
    expect(missing.message).toMatch(/has not created/);

    const ok = freshTarget();
    const r = await extractEntries([{ name: 'a', content: 'shared' }, { name: 'sub/b', type: 'link', linkname: './a' }], ok.target);
    expect(r.files).toBe(2);
    expect(statSync(path.join(ok.target, 'sub/b')).ino).toBe(statSync(path.join(ok.target, 'a')).ino);
  });

  it('refuses devices and fifos', async () => {
    for (const type of ['character-device', 'block-device', 'fifo'] as const) {
      const err = await rejection(extractEntries([{ name: `dev-${type}`, type }], freshTarget().target));
      expect(err.code).toBe('unsafe-entry');
      expect(err.message).toContain(`${type} entries are not allowed`);
    }
  });

  it('refuses entry types it does not understand, naming the entry and the type, and writes nothing', async () => {
    // Real GNU sparse files made by GNU tar: the old GNU format ('S' headers) and the pax formats
    // (typeflag '0' with GNU.sparse.* records, versions 0.1 and 1.0). Written as regular files they
    // would be a sparse map followed by the data, not the file.
    const src = mkdtempSync(path.join(os.tmpdir(), 'dc-untar-sparse-'));
    onTestFinished(() => rmSync(src, { recursive: true, force: true }));
    const sparse = path.join(src, 'holes');
    writeFileSync(sparse, '');
    await run('truncate', ['-s', String(4 * MiB), sparse]);
    writeFileSync(sparse, 'tail', { flag: 'a' });
    for (const format of [['--format=gnu'], ['--format=posix', '--sparse-version=0.1'], ['--format=posix', '--sparse-version=1.0']]) {
      // Buffered first: Node discards a child's unread stdout when the child exits before it is read.
      const { stdout: archive } = await run('tar', ['-C', src, '--sparse', ...format, '-cf', '-', 'holes'], { encoding: 'buffer' });
      const { target } = freshTarget();
      const err = await rejection(extractTarStream(chunked(archive), target, { maxBytes: 64 * MiB }));
      expect(err.code, format.join(' ')).toBe('unsafe-entry');
      expect(err.message).toMatch(/sparse/);
      expect(err.message).toContain('holes');
      expect(readdirSync(target), format.join(' ')).toEqual([]);
    }

    // Crafted headers of every other kind the extractor does not handle: the message names the raw type.
    const kinds: [string, RegExp][] = [
      ['S', /GNU sparse file \(type 'S'\)/],
      ['V', /GNU volume header \(type 'V'\)/],
      ['M', /GNU multi-volume continuation \(type 'M'\)/],
      ['D', /GNU dump directory \(type 'D'\)/],
      ['Z', /type 'Z'/],
      ['9', /type '9'/],
    ];
    for (const [flag, wording] of kinds) {
      const content = Buffer.from('not a plain file');
      const archive = Buffer.concat([rawHeader({ name: `odd-${flag}`, size: content.length, typeflag: flag }), blocks(content), END_OF_ARCHIVE]);
      const { target } = freshTarget();
      const err = await rejection(extractTarStream(chunked(archive, 100), target, { maxBytes: MiB }));
      expect(err.code, flag).toBe('unsafe-entry');
      expect(err.entry).toBe(`odd-${flag}`);
      expect(err.message).toMatch(wording);
      expect(err.message).toContain(`odd-${flag}`);
      expect(readdirSync(target), flag).toEqual([]);
    }

    // The check does not get in the way of what is understood: files, links and directories around it.
    const { target } = freshTarget();
    const fine = await packEntries([{ name: 'd', type: 'directory' }, { name: 'd/f', content: 'x' }, { name: 'l', type: 'symlink', linkname: 'd/f' }]);
    expect(await extractTarStream(chunked(fine, 7), target, { maxBytes: MiB })).toMatchObject({ files: 1, entries: 3 });
  });

  it('refuses a declared size beyond the cap before writing anything', async () => {
    const { target } = freshTarget();
    const lie = Buffer.concat([rawHeader({ name: 'huge', size: 7 * 1024 * 1024 * 1024 }), Buffer.alloc(4096)]);
    const err = await rejection(extractTarStream(chunked(lie), target, { maxBytes: 64 * MiB }));
    expect(err.code).toBe('too-large');
    expect(err.entry).toBe('huge');
    expect(existsSync(path.join(target, 'huge'))).toBe(false);
  });

  it('stops a stream of endless zero blocks at the stream cap', async () => {
    const { target } = freshTarget();
    let produced = 0;
    async function* zeros() {
      for (;;) {
        produced += 64 * 1024;
        yield Buffer.alloc(64 * 1024);
      }
    }
    const err = await rejection(extractTarStream(zeros(), target, { maxBytes: 2 * MiB }));
    expect(err.code).toBe('too-large');
    expect(produced).toBeLessThan(4 * MiB);
  });

  it('refuses pax and GNU long names that resolve outside, and NUL or backslash in names', async () => {
    const { target, outside } = freshTarget();
    const content = Buffer.from('owned');
    const paxEscape = Buffer.concat([
      paxHeader({ path: '../pax-escaped' }),
      rawHeader({ name: 'innocent', size: content.length }),
      blocks(content),
      END_OF_ARCHIVE,
    ]);
    const pax = await rejection(extractTarStream(chunked(paxEscape), target, { maxBytes: MiB }));
    expect(pax.entry).toBe('../pax-escaped');
    expect(existsSync(path.join(outside, 'pax-escaped'))).toBe(false);

    const longName = Buffer.from('../gnu-escaped\0');
    const gnuEscape = Buffer.concat([
      rawHeader({ name: '././@LongLink', size: longName.length, typeflag: 'L' }),
      blocks(longName),
      rawHeader({ name: 'innocent', size: content.length }),
      blocks(content),
      END_OF_ARCHIVE,
    ]);
    const gnu = await rejection(extractTarStream(chunked(gnuEscape), freshTarget().target, { maxBytes: MiB }));
    expect(gnu.entry).toBe('../gnu-escaped');

    const paxLink = Buffer.concat([paxHeader({ linkpath: '../../x' }), rawHeader({ name: 'l', size: 0, typeflag: '2', linkname: 'fine' }), END_OF_ARCHIVE]);
    const link = await rejection(extractTarStream(chunked(paxLink), freshTarget().target, { maxBytes: MiB }));
    expect(link.message).toMatch(/outside/);

    const nul = Buffer.concat([paxHeader({ path: 'a\0b' }), rawHeader({ name: 'x', size: 0 }), END_OF_ARCHIVE]);
    expect((await rejection(extractTarStream(chunked(nul), freshTarget().target, { maxBytes: MiB }))).message).toMatch(/NUL/);
    const backslash = await rejection(extractEntries([{ name: 'a\\..\\b', content: 'x' }], freshTarget().target));
    expect(backslash.message).toMatch(/backslash/);
  });

  it('detects truncation inside an entry and at an entry boundary, removing partial output', async () => {
    const data = await packEntries([
      { name: 'first', content: Buffer.alloc(3000, 1) },
      { name: 'second', content: Buffer.alloc(5000, 2) },
    ]);
    const a = freshTarget();
    const inside = await rejection(extractTarStream(chunked(data.subarray(0, 512 + 3072 + 512 + 1000)), a.target, { maxBytes: MiB }));
    expect(inside.code).toBe('truncated');
    expect(readdirSync(a.target)).toEqual([]);
    const b = freshTarget();
    const boundary = await rejection(extractTarStream(chunked(data.subarray(0, 512 + 3072)), b.target, { maxBytes: MiB }));
    expect(boundary.code).toBe('truncated');
    expect(boundary.message).toMatch(/end-of-archive/);
    expect(readdirSync(b.target)).toEqual([]);
  });

  it('rejects garbage that is not a tar archive', async () => {
    const err = await rejection(extractTarStream(chunked(Buffer.alloc(2048, 0x41)), freshTarget().target, { maxBytes: MiB }));
    expect(err.code).toBe('corrupt');
  });

  it('cleans up what it created on failure but leaves what was there before', async () => {
    const { target } = freshTarget();
    mkdirSync(target);
    writeFileSync(path.join(target, 'postgresql.conf'), 'port = 1\n');
    const err = await rejection(
      extractEntries(
        [
          { name: 'base/1/100', content: 'a' },
          { name: 'global/200', content: 'b' },
          { name: 'dev', type: 'fifo' },
        ],
        target,
      ),
    );
    expect(err.entry).toBe('dev');
    expect(readdirSync(target)).toEqual(['postgresql.conf']);
    expect(readFileSync(path.join(target, 'postgresql.conf'), 'utf8')).toBe('port = 1\n');
  });

  it('replaces a pre-existing symlink instead of writing through it, and never replaces a directory', async () => {
    const { target, outside } = freshTarget();
    mkdirSync(target);
    writeFileSync(path.join(outside, 'victim'), 'untouched');
    symlinkSync(path.join(outside, 'victim'), path.join(target, 'postgresql.conf'));
    await extractEntries([{ name: 'postgresql.conf', content: 'from archive' }], target);
    expect(readFileSync(path.join(outside, 'victim'), 'utf8')).toBe('untouched');
    expect(lstatSync(path.join(target, 'postgresql.conf')).isFile()).toBe(true);

    const err = await rejection(extractEntries([{ name: 'x', type: 'directory' }, { name: 'x', content: 'file' }], freshTarget().target));
    expect(err.message).toMatch(/would replace a directory/);
  });

  it('strips set-id bits and keeps directories private', async () => {
    const { target } = freshTarget();
    await extractEntries(
      [
        { name: 'open', type: 'directory', mode: 0o777 },
        { name: 'open/tool', content: '#!/bin/sh\n', mode: 0o6777 },
      ],
      target,
    );
    expect(statSync(path.join(target, 'open')).mode & 0o7777).toBe(0o700);
    expect(statSync(path.join(target, 'open/tool')).mode & 0o7777).toBe(0o755);
  });

  it('enforces the entry limit', async () => {
    const entries = Array.from({ length: 20 }, (_, i) => ({ name: `f${i}`, content: 'x' }));
    const err = await rejection(extractTarStream(chunked(await packEntries(entries)), freshTarget().target, { maxBytes: MiB, maxEntries: 10 }));
    expect(err.code).toBe('too-many-entries');
    expect(err.entry).toBe('f10');
  });

  it('rethrows the input stream error unchanged', async () => {
    const data = await packEntries([{ name: 'a', content: Buffer.alloc(10_000, 3) }]);
    const boom = new Error('connection reset by peer');
    async function* failing() {
      yield data.subarray(0, 2048);
      throw boom;
    }
    const { target } = freshTarget();
    await expect(extractTarStream(failing(), target, { maxBytes: MiB })).rejects.toBe(boom);
    expect(readdirSync(target)).toEqual([]);
  });

  it('aborts promptly when the signal fires while the input stalls', async () => {
    const data = await packEntries([{ name: 'a', content: Buffer.alloc(10_000, 3) }]);
    const source = new Readable({ read() {} });
    source.push(data.subarray(0, 1024));
    const ac = new AbortController();
    const { target } = freshTarget();
    const pending = extractTarStream(source, target, { maxBytes: MiB, signal: ac.signal });
    setTimeout(() => ac.abort(new Error('activity cancelled')), 50);
    const started = Date.now();
    const err = await rejection(pending);
    expect(err.code).toBe('aborted');
    expect(Date.now() - started).toBeLessThan(5000);
    expect(source.destroyed).toBe(true);
    expect(readdirSync(target)).toEqual([]);
  });
});
