/**
 * Validation of the names inside an archive. Pure string work: nothing here touches the disk, so
 * every rule can be tested on its own and the extractor only ever sees names already proven safe.
 */

/** Why a name or link target was refused; the extractor turns it into an error naming the entry. */
export class UnsafeNameError extends Error {
  override name = 'UnsafeNameError';
}

const MAX_NAME_BYTES = 4096;
const MAX_COMPONENT_BYTES = 255;

function rejectRawForms(name: string, what: string): void {
  if (name.length === 0) throw new UnsafeNameError(`empty ${what}`);
  if (name.includes('\0')) throw new UnsafeNameError(`${what} contains a NUL byte`);
  if (name.includes('\\')) throw new UnsafeNameError(`${what} contains a backslash`);
  if (Buffer.byteLength(name, 'utf8') > MAX_NAME_BYTES) throw new UnsafeNameError(`${what} is longer than ${MAX_NAME_BYTES} bytes`);
}

/**
 * The components of an entry name relative to the target directory. `./a//b/` becomes `[a, b]`;
 * `.` or `./` becomes `[]` (the target directory itself). Absolute names and any `..` component
 * are refused outright rather than normalised, because an archive that contains them was not made
 * from a data directory.
 */
export function entryComponents(name: string): string[] {
  rejectRawForms(name, 'name');
  if (name.startsWith('/')) throw new UnsafeNameError('absolute path');
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') throw new UnsafeNameError('path contains a ".." component');
    if (Buffer.byteLength(part, 'utf8') > MAX_COMPONENT_BYTES) throw new UnsafeNameError(`path component longer than ${MAX_COMPONENT_BYTES} bytes`);
    parts.push(part);
  }
  return parts;
}

/**
 * Checks a symbolic link's target. The link itself lives in a real directory `linkDir` (the
 * extractor never writes through a link), so a relative target whose `..` components all come
 * first and do not climb above the target directory ends inside it; every link it may pass
 * through on the way down was checked the same way, so the whole resolution stays inside. A `..`
 * after a normal component is refused: it would be resolved relative to wherever an earlier
 * component (possibly another link) points, which a lexical check cannot see.
 */
export function checkSymlinkTarget(linkDir: string[], target: string): void {
  rejectRawForms(target, 'link target');
  if (target.startsWith('/')) throw new UnsafeNameError(`absolute link target ${JSON.stringify(target)}`);
  let climbs = 0;
  let descended = false;
  for (const part of target.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (descended) throw new UnsafeNameError(`link target ${JSON.stringify(target)} has ".." after a normal component`);
      climbs++;
    } else {
      descended = true;
    }
  }
  if (climbs > linkDir.length) throw new UnsafeNameError(`link target ${JSON.stringify(target)} points outside the target directory`);
}

/** A name as shown in messages: quoted, control characters escaped, long names shortened. */
export function displayName(name: string): string {
  const shown = name.length > 200 ? `${name.slice(0, 200)}…` : name;
  return JSON.stringify(shown);
}
