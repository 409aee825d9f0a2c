import { closeSync, existsSync, fdatasyncSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';

/**
 * Which TOC entries a restore into the destination started and finished, appended line by line in
 * the import's working directory, so an attempt after a crash knows what the destination already
 * holds. The journal belongs to one dump (its first record names the dump's toc.dat checksum): a
 * journal of another dump is discarded, never mixed in.
 *
 * `start` is written before an entry's pg_restore runs, `done` after it exited 0 (its single
 * transaction committed). An entry started but not done may or may not have committed: the
 * restore redoes it in a way that is right either way (a table's data is truncated first). Each
 * record is one write, synced: a crash leaves at most a torn last line, which loading skips.
 */

type JournalRecord = { t: 'dump'; tocSha256: string } | { t: 'start' | 'done'; ids: number[]; attempt: number };

export class RestoreJournal {
  readonly started = new Set<number>();
  readonly done = new Set<number>();
  private fd: number | undefined;

  private constructor(private readonly tocSha256: string) {}

  /** The journal at `file` for the dump with this toc.dat checksum; one of another dump is removed. */
  static open(file: string, tocSha256: string): RestoreJournal {
    const journal = new RestoreJournal(tocSha256);
    let sameDump = false;
    if (existsSync(file)) {
      const lines = readFileSync(file, 'utf8').split('\n');
      for (const line of lines) {
        let r: JournalRecord;
        try {
          r = JSON.parse(line) as JournalRecord;
        } catch {
          continue; // a torn last line (or the empty one after the last newline)
        }
        if (r.t === 'dump') sameDump = r.tocSha256 === tocSha256;
        else if (sameDump && Array.isArray(r.ids)) for (const id of r.ids) if (Number.isInteger(id)) (r.t === 'done' ? journal.done : journal.started).add(id);
      }
      if (!sameDump) {
        journal.started.clear();
        journal.done.clear();
        rmSync(file, { force: true });
      }
    }
    journal.fd = openSync(file, 'a', 0o600);
    if (!sameDump) journal.append({ t: 'dump', tocSha256 });
    return journal;
  }

  /** Adds what an earlier attempt's last heartbeat said (it may be newer than a journal on another disk; here it rarely is). */
  merge(details: { tocSha256?: unknown; done?: unknown; started?: unknown } | undefined): void {
    if (!details || details.tocSha256 !== this.tocSha256) return;
    for (const id of Array.isArray(details.started) ? details.started : []) if (Number.isInteger(id)) this.started.add(id as number);
    for (const id of Array.isArray(details.done) ? details.done : []) if (Number.isInteger(id)) this.done.add(id as number);
  }

  /** Before the entries' pg_restore runs (one record for a batch restored in one transaction). */
  recordStart(ids: number[], attempt: number): void {
    for (const id of ids) this.started.add(id);
    this.append({ t: 'start', ids, attempt });
  }

  /** After the entries' pg_restore exited 0. */
  recordDone(ids: number[], attempt: number): void {
    for (const id of ids) this.done.add(id);
    this.append({ t: 'done', ids, attempt });
  }

  private append(r: JournalRecord): void {
    if (this.fd === undefined) return;
    writeSync(this.fd, `${JSON.stringify(r)}\n`);
    fdatasyncSync(this.fd);
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

/** The records of a journal file, for tests and benchmarks that check what ran how often. */
export function readRestoreJournal(file: string): { t: string; ids?: number[]; attempt?: number }[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .flatMap((line) => {
      try {
        return [JSON.parse(line) as { t: string; ids?: number[]; attempt?: number }];
      } catch {
        return [];
      }
    });
}
