import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

// Users install the packages, not the repository: no error, probe reason or help text may
// send them to a script that exists only in a checkout (scripts/…, npm run …, npm rebuild).
const repo = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', '..', '..');
const sources = (dir: string): string[] => readdirSync(dir, { withFileTypes: true })
  .flatMap((e) => (e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));

test('no string in a published package points at repository-internal scripts', () => {
  const published = readdirSync(join(repo, 'packages')).filter((p) => {
    try { return !JSON.parse(readFileSync(join(repo, 'packages', p, 'package.json'), 'utf8')).private; } catch { return false; }
  });
  expect(published).toContain('cairnfs');
  const offending: string[] = [];
  for (const pkg of published) {
    for (const file of sources(join(repo, 'packages', pkg, 'src'))) {
      // String literals only (comments may name scripts for maintainers).
      const code = readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
      for (const m of code.matchAll(/(['"`])((?:\\.|(?!\1)[^\\\n])*)\1/g)) {
        if (/\bscripts\/|\bnpm (run|rebuild)\b|install-deps/.test(m[2]!)) offending.push(`${file.slice(repo.length + 1)}: ${m[2]}`);
      }
    }
  }
  expect(offending).toEqual([]);
});
