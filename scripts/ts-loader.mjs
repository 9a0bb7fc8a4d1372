// Node module hooks that let a plain `node` child process run cairn's TypeScript
// sources directly, as jest does for tests (same moduleNameMapper rules, same @swc
// transpile, no type check). The crash-consistency harness spawns hundreds of
// children that must be SIGKILLed mid-operation; they have to run the code under test,
// not a possibly stale dist/ build.
//
// Use: node --import ./scripts/ts-register.mjs child.ts
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
// @swc/core is loaded only on a cache miss: its native binding costs ~100 ms per child.

const cacheDir = join(tmpdir(), 'cairn-ts-cache');
const repo = join(dirname(fileURLToPath(import.meta.url)), '..');

export async function resolve(specifier, context, next) {
  const pkg = /^@cairnfs\/([a-z0-9-]+)$/.exec(specifier) ?? (specifier === 'cairnfs' ? [specifier, 'cairnfs'] : null);
  if (pkg) {
    return { url: pathToFileURL(join(repo, 'packages', pkg[1], 'src', 'index.ts')).href, shortCircuit: true };
  }
  if (specifier === 'cairnfs') {
    return { url: pathToFileURL(join(repo, 'packages', 'cairnfs', 'src', 'index.ts')).href, shortCircuit: true };
  }
  if (context.parentURL?.endsWith('.ts') && /^\.{1,2}\/.*\.js$/.test(specifier)) {
    const ts = new URL(specifier.replace(/\.js$/, '.ts'), context.parentURL);
    if (existsSync(fileURLToPath(ts))) return { url: ts.href, shortCircuit: true };
  }
  return next(specifier, context);
}

export async function load(url, context, next) {
  if (!url.endsWith('.ts')) return next(url, context);
  const path = fileURLToPath(url);
  const source = await readFile(path, 'utf8');
  // Transpiled output is cached by content hash: hundreds of children load the same files.
  const key = createHash('sha256').update(path).update('\0').update(source).digest('hex').slice(0, 32);
  const cached = join(cacheDir, `${key}.js`);
  try {
    return { format: 'module', source: await readFile(cached, 'utf8'), shortCircuit: true };
  } catch {
    // not cached yet
  }
  const { transform } = await import('@swc/core');
  const out = await transform(source, {
    filename: path,
    jsc: { parser: { syntax: 'typescript' }, target: 'es2022' },
    module: { type: 'es6' },
    sourceMaps: 'inline',
  });
  await mkdir(cacheDir, { recursive: true });
  const tmp = `${cached}.${process.pid}.tmp`;
  await writeFile(tmp, out.code);
  await rename(tmp, cached);
  return { format: 'module', source: out.code, shortCircuit: true };
}
