#!/usr/bin/env node
// Gives every public package the same publishing metadata, so a new package gets it by
// running this script rather than by copying fields by hand:
//
//   node scripts/package-meta.mjs           rewrites packages/*/package.json, copies LICENSE
//   node scripts/package-meta.mjs --check   exits 1 and lists what differs (CI)
//
// For each non-private package: repository/homepage/bugs, license and a copy of the root
// LICENSE, engines (Node >= 20.19, the first 20.x where require() of an ES module works),
// publishConfig.access public (scoped packages are private by default), main/types at the
// top level for tools that ignore `exports`, `exports` with types first plus
// ./package.json, a clean prepack build, and `files` that leave the TypeScript build info out.
// Fields the script does not own (name, description, dependencies, bin, …) are kept.
import { readFileSync, readdirSync, writeFileSync, existsSync, copyFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const check = process.argv.includes('--check');

/** Where the source lives; every package links back to it. */
export const REPOSITORY = 'https://github.com/cairnfs/cairn';
export const NODE_RANGE = '>=20.19';

/** Key order of the rewritten package.json: what a reader looks for first comes first. */
const ORDER = [
  'name', 'version', 'description', 'keywords', 'license', 'repository', 'homepage', 'bugs',
  'type', 'engines', 'os', 'cpu', 'main', 'types', 'exports', 'bin', 'files', 'scripts',
  'dependencies', 'peerDependencies', 'optionalDependencies', 'devDependencies', 'publishConfig',
];

function normalized(dir, pkg) {
  const out = { ...pkg };
  out.license = 'Apache-2.0';
  out.repository = { type: 'git', url: `git+${REPOSITORY}.git`, directory: `packages/${dir}` };
  out.homepage = `${REPOSITORY}/tree/main/packages/${dir}#readme`;
  out.bugs = { url: `${REPOSITORY}/issues` };
  out.engines = { ...(pkg.engines ?? {}), node: NODE_RANGE };
  out.main = './dist/index.js';
  out.types = './dist/index.d.ts';
  out.exports = {
    '.': { types: './dist/index.d.ts', default: './dist/index.js' },
    ...Object.fromEntries(Object.entries(pkg.exports ?? {}).filter(([k]) => k !== '.' && k !== './package.json')),
    './package.json': './package.json',
  };
  // The build info stays in dist/ (deleting dist/ must force a rebuild), but is not shipped.
  const files = (pkg.files ?? ['dist']).filter((f) => f !== '!dist/.tsbuildinfo');
  out.files = [...files, '!dist/.tsbuildinfo'];
  // A clean build: files of sources since deleted (or of options since turned off, such as
  // declaration maps) must not linger in the tarball.
  out.scripts = { ...(pkg.scripts ?? {}), prepack: 'rm -rf dist && tsc -b' };
  // npm publish rewrites "./x" bin targets to "x" and warns; write them as npm wants them.
  if (pkg.bin && typeof pkg.bin === 'object') {
    out.bin = Object.fromEntries(Object.entries(pkg.bin).map(([k, v]) => [k, String(v).replace(/^\.\//, '')]));
  }
  out.publishConfig = { ...(pkg.publishConfig ?? {}), access: 'public' };
  const ordered = {};
  for (const k of ORDER) if (k in out) ordered[k] = out[k];
  for (const k of Object.keys(out)) if (!(k in ordered)) ordered[k] = out[k];
  return ordered;
}

const problems = [];
const license = readFileSync(join(repo, 'LICENSE'));
for (const dir of readdirSync(join(repo, 'packages')).sort()) {
  const file = join(repo, 'packages', dir, 'package.json');
  if (!existsSync(file)) continue;
  const text = readFileSync(file, 'utf8');
  const pkg = JSON.parse(text);
  if (pkg.private) continue;
  const want = JSON.stringify(normalized(dir, pkg), null, 2) + '\n';
  if (want !== text) {
    if (check) problems.push(`packages/${dir}/package.json: publishing metadata differs`);
    else writeFileSync(file, want);
  }
  const lic = join(repo, 'packages', dir, 'LICENSE');
  if (!existsSync(lic) || !readFileSync(lic).equals(license)) {
    if (check) problems.push(`packages/${dir}/LICENSE: missing or not the root LICENSE`);
    else copyFileSync(join(repo, 'LICENSE'), lic);
  }
  if (!existsSync(join(repo, 'packages', dir, 'README.md'))) problems.push(`packages/${dir}/README.md: missing (write one)`);
}

if (problems.length) {
  for (const p of problems) console.error(`package-meta: ${p}`);
  if (check) console.error('package-meta: run `node scripts/package-meta.mjs` and commit the result');
  process.exit(1);
}
console.log(`package-meta: ${check ? 'every public package is in order' : 'done'}`);
