// Module hooks for jest-globals.mjs: jest.config.js's moduleNameMapper, for Node's loader.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export async function resolve(specifier, context, next) {
  const pkg = /^@cairnfs\/([a-z0-9-]+)$/.exec(specifier) ?? (specifier === 'cairnfs' ? [specifier, 'cairnfs'] : null);
  if (pkg) return { url: pathToFileURL(join(repo, 'packages', pkg[1], 'src', 'index.ts')).href, shortCircuit: true };
  if (context.parentURL?.endsWith('.ts') && /^\.{1,2}\/.*\.js$/.test(specifier)) {
    const ts = new URL(specifier.replace(/\.js$/, '.ts'), context.parentURL);
    if (existsSync(fileURLToPath(ts))) return { url: ts.href, shortCircuit: true };
  }
  return next(specifier, context);
}
