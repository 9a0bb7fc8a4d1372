import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import ts from 'typescript';
import { readMountInfo } from '@cairnfs/core';
import { describeBackend, sampleLayers, tarDir, writeDockerSave, writeDockerStore } from '@cairnfs/testkit';

// The doc test: every code block in the README, the guides and the package READMEs whose
// fence reads ```ts test is type-checked against the packages' sources and run, as written,
// in a sandbox: a fresh directory as the working directory holding the files examples
// name (busybox.tar: a docker save tarball tagged busybox:latest; layer.tar: a layer), with
// every /var/lib/ path moved under the sandbox (/var/lib/docker holds a Docker aufs store).
// Blocks without `test` are fragments, not meant to run.
const repo = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', '..', '..');
const register = join(repo, 'scripts', 'ts-register.mjs');

interface Block { file: string; line: number; code: string }

function docFiles(): string[] {
  const pkgs = readdirSync(join(repo, 'packages')).map((p) => join('packages', p, 'README.md'));
  const docs = readdirSync(join(repo, 'docs')).filter((f) => f.endsWith('.md')).map((f) => join('docs', f));
  return ['README.md', ...docs, ...pkgs].filter((f) => {
    try { readFileSync(join(repo, f)); return true; } catch { return false; }
  });
}

export function testBlocks(markdown: string, file: string): Block[] {
  const out: Block[] = [];
  const lines = markdown.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (!/^```(ts|typescript|js|mjs)\s+test\s*$/.test(lines[i]!)) continue;
    const start = i + 1;
    while (++i < lines.length && !lines[i]!.startsWith('```'));
    out.push({ file, line: start, code: lines.slice(start, i).join('\n') + '\n' });
  }
  return out;
}

const blocks = docFiles().flatMap((f) => testBlocks(readFileSync(join(repo, f), 'utf8'), f));
const name = (b: Block) => `${b.file}:${b.line}`;

test('the docs hold runnable examples (README, images, migration, the umbrella package)', () => {
  const files = new Set(blocks.map((b) => b.file));
  for (const f of ['README.md', 'docs/images.md', 'docs/migration.md', 'packages/cairnfs/README.md']) expect(files).toContain(f);
});

test('every example type-checks against the packages', () => {
  // Each block as its own module, resolved as jest resolves them: packages to their sources.
  const names = blocks.map((_, i) => join(repo, 'packages', 'cairnfs', 'test', `__doc_block_${i}.mts`));
  const sources = new Map(names.map((n, i) => [n, blocks[i]!.code]));
  const options: ts.CompilerOptions = {
    module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, target: ts.ScriptTarget.ES2022,
    strict: true, noEmit: true, skipLibCheck: true, types: ['node'], baseUrl: repo,
    paths: { '@cairnfs/*': ['packages/*/src/index.ts'], cairnfs: ['packages/cairnfs/src/index.ts'] },
  };
  const host = ts.createCompilerHost(options);
  const read = host.readFile.bind(host);
  host.readFile = (f) => sources.get(f) ?? read(f);
  const exists = host.fileExists.bind(host);
  host.fileExists = (f) => sources.has(f) || exists(f);
  const getSource = host.getSourceFile.bind(host);
  host.getSourceFile = (f, lang, ...rest) => (sources.has(f) ? ts.createSourceFile(f, sources.get(f)!, lang) : getSource(f, lang, ...rest));
  const program = ts.createProgram(names, options, host);
  const problems = ts.getPreEmitDiagnostics(program).filter((d) => d.file && sources.has(d.file.fileName)).map((d) => {
    const b = blocks[names.indexOf(d.file!.fileName)]!;
    const { line } = d.file!.getLineAndCharacterOfPosition(d.start ?? 0);
    return `${b.file}:${b.line + line}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
  });
  expect(problems).toEqual([]);
}, 120_000);

/** Runs one example in its sandbox; resolves with what it printed, rejects with it on failure. */
function runBlock(b: Block, sandbox: string): Promise<string> {
  const code = b.code.replaceAll('/var/lib/', `${sandbox}/var/lib/`);
  return writeFile(join(sandbox, 'example.ts'), code).then(() => new Promise((done, fail) => {
    const child = spawn(process.execPath, ['--import', register, join(sandbox, 'example.ts')], {
      cwd: sandbox, env: { ...process.env, NODE_OPTIONS: '' }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d) => { output += d; });
    child.stderr.on('data', (d) => { output += d; });
    child.on('close', (code) => (code === 0 ? done(output) : fail(new Error(`${name(b)} exited ${code}:\n${output}`))));
  }));
}

async function makeSandbox(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-doc-'));
  const layers = await sampleLayers();
  await writeDockerSave(join(dir, 'busybox'), layers, 'busybox:latest');
  tarDir(join(dir, 'busybox'), join(dir, 'busybox.tar'));
  await rm(join(dir, 'busybox'), { recursive: true });
  await writeFile(join(dir, 'layer.tar'), layers[0]!);
  await mkdir(join(dir, 'var', 'lib', 'docker', 'aufs'), { recursive: true });
  await writeDockerStore(join(dir, 'var', 'lib', 'docker', 'aufs'));
  return dir;
}

// The examples mount overlays and apply layers with their owners: root, as in production.
describeBackend('root', process.getuid?.() === 0 ? null : 'the examples mount and chown: run the tests as root', () => {
  test.each(blocks.map((b) => [name(b), b] as const))('%s runs as written', async (_n, b) => {
    const sandbox = await makeSandbox();
    try {
      await runBlock(b, sandbox);
      const left = (await readMountInfo()).filter((m) => m.mountPoint.startsWith(sandbox));
      expect(left.map((m) => relative(sandbox, m.mountPoint))).toEqual([]); // examples clean up their mounts
    } finally {
      await rm(sandbox, { recursive: true, force: true });
    }
  }, 60_000);
});
