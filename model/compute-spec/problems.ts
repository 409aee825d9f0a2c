/** Problems found in a spec, each as "field.path: problem". */
import type { z } from 'zod';

export type Path = (string | number)[];

function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out || '(root)';
}

export class Problems {
  readonly list: string[] = [];
  constructor(private readonly prefix: Path) {}
  add(path: Path, problem: string): void {
    this.list.push(`${formatPath([...this.prefix, ...path])}: ${problem}`);
  }
}

export function zodProblems(error: z.ZodError, problems: Problems): void {
  for (const issue of error.issues) problems.add(issue.path as Path, issue.message);
}
