import { execFile, execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describeBackend, missingTools } from '@cairnfs/testkit';

// The scripts are generated from the command tree; these run them in the real shells and
// ask for completions as the shell would on TAB.
const run = promisify(execFile);
const repo = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', '..', '..');
const bin = join(repo, 'packages/cairnfs/dist/cli/main.js');

let dir: string;
const script = async (shell: string) => {
  const { stdout } = await run(process.execPath, [bin, 'completion', shell], { env: { ...process.env, NODE_OPTIONS: '' } });
  const file = join(dir, `cairn.${shell}`);
  await writeFile(file, stdout);
  return file;
};

beforeAll(async () => {
  execFileSync(process.execPath, [join(repo, 'node_modules/typescript/bin/tsc'), '-b', 'packages/cairnfs'], { cwd: repo });
  dir = await mkdtemp(join(tmpdir(), 'cairn-completion-'));
}, 180_000);
afterAll(async () => { await rm(dir, { recursive: true, force: true }); });

/** What bash offers for the words of a command line, the last being the one completed. */
async function bashComplete(file: string, words: string[]): Promise<string[]> {
  const line = `source ${file}; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _cairn; printf '%s\\n' "\${COMPREPLY[@]}"`;
  const { stdout } = await run('bash', ['-c', line], { cwd: dir });
  return stdout.split('\n').filter(Boolean).sort();
}

test('bash: commands, a command\'s options with the global ones, option values, paths for import', async () => {
  const file = await script('bash');
  expect(await bashComplete(file, ['cairn', 'im'])).toEqual(['images', 'import']);
  expect(await bashComplete(file, ['cairn', '--root', '/x', 'p'])).toEqual(['probe', 'ps', 'pull', 'push']);
  expect(await bashComplete(file, ['cairn', 'images', '--'])).toEqual(expect.arrayContaining(['--format', '--quiet', '--no-trunc', '--root', '--bytes', '--help']));
  expect(await bashComplete(file, ['cairn', 'images', '--format', ''])).toEqual(['json', 'table']);
  expect(await bashComplete(file, ['cairn', '--driver', 'o'])).toEqual(['overlay2']);
  expect(await bashComplete(file, ['cairn', '--progress', ''])).toEqual(['auto', 'json', 'none', 'plain']);
  expect(await bashComplete(file, ['cairn', 'completion', ''])).toEqual(['bash', 'fish', 'zsh']);
  await writeFile(join(dir, 'image.tar'), '');
  expect(await bashComplete(file, ['cairn', 'import', 'ima'])).toEqual(['image.tar']);
});

describeBackend('fish', missingTools('fish'), () => {
  test('fish: commands with descriptions, per-command options and their values', async () => {
    const file = await script('fish');
    const complete = async (line: string) => (await run('fish', ['-c', `source ${file}; complete -C '${line}'`])).stdout;
    expect(await complete('cairn im')).toMatch(/^images\tlist images$/m);
    expect(await complete('cairn im')).toMatch(/^import\t/m);
    expect(await complete('cairn images --format ')).toMatch(/^json\t.*\ntable\t/m);
    expect(await complete('cairn ps -')).toMatch(/^--quiet\t/m);
    expect(await complete('cairn --driver ')).toMatch(/^vfs\t/m);
  });
});

describeBackend('zsh', missingTools('zsh'), () => {
  test('zsh: the script parses and names every command and the --format choices', async () => {
    const file = await script('zsh');
    await run('zsh', ['-n', file]);
    const text = (await run('cat', [file])).stdout;
    for (const c of ['probe', 'images', 'ps', 'du', 'export', 'completion']) expect(text).toMatch(new RegExp(`^    '${c}:`, 'm'));
    expect(text).toContain(':value:(table json)');
    expect(text).toContain('compdef _cairn cairn');
  });
});

test('an unknown shell is a usage error', async () => {
  await expect(run(process.execPath, [bin, 'completion', 'tcsh'], { env: { ...process.env, NODE_OPTIONS: '' } })).rejects.toMatchObject({ code: 2 });
});
