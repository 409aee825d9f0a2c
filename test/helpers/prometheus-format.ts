import { execFileSync, spawnSync } from 'node:child_process';

/**
 * Checks Prometheus text exposition (format 0.0.4): with `promtool check metrics` when it is
 * installed (.ci/run installs Debian's prometheus package for it), and always with a strict line
 * check of our own, so a malformed exposition fails even where promtool is missing. Returns the
 * problems; empty means the text is valid.
 */
const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const LABEL = '[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\["\\\\n])*"';
const VALUE = '(?:[+-]?(?:\\d+(?:\\.\\d*)?|\\.\\d+)(?:[eE][+-]?\\d+)?|[+-]?Inf|NaN)';
const SAMPLE = new RegExp(`^(${NAME})(?:\\{(?:${LABEL}(?:,${LABEL})*,?)?\\})? ${VALUE}(?: -?\\d+)?$`);
const HELP = new RegExp(`^# HELP (${NAME}) .*$`);
const TYPE = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`);

export function promtoolPath(): string | undefined {
  const found = spawnSync('sh', ['-c', 'command -v promtool'], { encoding: 'utf8' });
  return found.status === 0 ? found.stdout.trim() : undefined;
}

export function expositionProblems(text: string): string[] {
  const problems: string[] = [];
  if (!text.endsWith('\n')) problems.push('the text does not end with a line feed');
  const typed = new Map<string, string>();
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  lines.forEach((line, i) => {
    const where = `line ${i + 1}: ${JSON.stringify(line.slice(0, 120))}`;
    if (line.startsWith('#')) {
      const type = TYPE.exec(line);
      if (type) {
        if (typed.has(type[1]!)) problems.push(`${where}: second TYPE line for ${type[1]}`);
        typed.set(type[1]!, type[2]!);
      } else if (!HELP.test(line) && /^# (HELP|TYPE) /.test(line)) {
        problems.push(`${where}: malformed HELP/TYPE line`);
      }
      return;
    }
    if (line === '') return; // the format ignores empty lines
    if (!SAMPLE.test(line)) problems.push(`${where}: not a valid sample line`);
  });
  return problems;
}

/** Both checks; promtool's verdict (with its lint findings) is included when it is installed. */
export function checkExposition(text: string): { problems: string[]; promtool: boolean } {
  const problems = expositionProblems(text);
  const promtool = promtoolPath();
  if (promtool) {
    try {
      execFileSync(promtool, ['check', 'metrics'], { input: text, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string };
      problems.push(`promtool check metrics: ${`${e.stdout ?? ''}${e.stderr ?? ''}`.trim()}`);
    }
  }
  return { problems, promtool: promtool !== undefined };
}
