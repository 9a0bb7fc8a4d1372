// Finds and loads the addon binary. node-gyp-build picks, in order: a local build
// (build/Release, made by `node-gyp rebuild` at install when no prebuilt binary fits, or by
// a developer), then the prebuilt binary for this platform under prebuilds/ (linux-x64 and
// linux-arm64 for glibc, Node-API, so one binary serves every Node version). When neither
// exists or the one found does not load, the error says why and what would fix it: a
// person reading it must not have to know how node-gyp works.
import { accessSync, constants, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { delimiter, join } from 'node:path';

interface NodeGypBuild { path(dir: string): string }

/** Loads the addon of the package at `root` (the directory holding its package.json). */
export function loadAddon<T>(root: string): T {
  const require = createRequire(import.meta.url);
  const nodeGypBuild = require('node-gyp-build') as NodeGypBuild;
  let file: string;
  try {
    file = nodeGypBuild.path(root);
  } catch (err) {
    throw new Error(
      `@cairnfs/sys: its native addon has no prebuilt binary for ${target()} ` +
        `(the package ships ${shipped(root) || 'none'}) and was not built from source at install. ` +
        buildAdvice(root),
      { cause: err },
    );
  }
  try {
    return require(file) as T;
  } catch (err) {
    const prebuilt = file.includes(`${join(root, 'prebuilds')}/`);
    throw new Error(
      `@cairnfs/sys: its native addon ${file} does not load on ${target()}: ${(err as Error).message}. ` +
        (prebuilt
          ? 'The prebuilt binaries need glibc >= 2.33 and the libstdc++ of GCC >= 11 (Debian 12, Ubuntu 22.04, RHEL 9 or later). '
          : 'It was built for another Node or system: build it again. ') +
        buildAdvice(root),
      { cause: err },
    );
  }
}

/** What node-gyp-build looked for, in its terms (it honours the same overrides). */
function target(): string {
  const arch = process.env.npm_config_arch || process.arch;
  const platform = process.env.npm_config_platform || process.platform;
  let libc = process.env.LIBC;
  if (!libc && platform === 'linux') {
    const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
    libc = report?.header?.glibcVersionRuntime ? `glibc ${report.header.glibcVersionRuntime}` : 'musl';
  }
  return `${platform}-${arch}${libc ? ` (${libc})` : ''}, Node ${process.versions.node}`;
}

function shipped(root: string): string {
  try {
    return readdirSync(join(root, 'prebuilds')).join(', ');
  } catch {
    return '';
  }
}

/** How to build from source here, naming the tools this host lacks. */
function buildAdvice(root: string): string {
  const tools: Array<[string, string[]]> = [['a C++ compiler (g++)', ['g++', 'c++', 'clang++']], ['make', ['make']], ['python3', ['python3']]];
  const missing = tools.filter(([, names]) => !names.some(onPath)).map(([what]) => what);
  return (
    'To build it from source, ' +
    (missing.length ? `install ${missing.join(', ')} (missing here), then ` : '') +
    `run \`npx node-gyp rebuild\` in ${root}; node-gyp needs this Node's headers ` +
    '(it downloads them, or give it --nodedir=DIR of an installed Node source tree).'
  );
}

function onPath(name: string): boolean {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}
