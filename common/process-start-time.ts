import { readFileSync } from 'node:fs';

/**
 * The kernel's start time of a live process (field 22 of /proc/<pid>/stat, clock ticks since
 * boot). A pid plus its start time names one process for good, so a recycled pid is never taken
 * for the one recorded. Undefined when the process is gone or a zombie.
 */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces and parentheses; fields resume after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const state = rest[0];
    if (state === 'Z' || state === 'X') return undefined;
    return rest[19];
  } catch {
    return undefined;
  }
}
