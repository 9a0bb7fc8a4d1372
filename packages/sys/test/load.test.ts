import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadAddon } from '../src/load.js';

// What a user's install looks like: the package directory with its prebuilds and no
// build/ (npm install --ignore-scripts, or no compiler). Each case copies real binaries
// from this package's prebuilds/ into a fresh package directory and loads from there.
const sysRoot = fileURLToPath(new URL('..', import.meta.url));
const prebuilt = (arch: string) => join(sysRoot, 'prebuilds', `linux-${arch}`, '@cairnfs+sys.glibc.node');
const otherArch = process.arch === 'arm64' ? 'x64' : 'arm64';

let dir: string;
let savedPath: string | undefined;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cairn-load-'));
  await writeFile(join(dir, 'package.json'), JSON.stringify({ name: '@cairnfs/sys' }));
  savedPath = process.env.PATH;
});
afterEach(async () => {
  process.env.PATH = savedPath;
  await rm(dir, { recursive: true, force: true });
});

async function ship(arch: string, from = arch): Promise<void> {
  await mkdir(join(dir, 'prebuilds', `linux-${arch}`), { recursive: true });
  await copyFile(prebuilt(from), join(dir, 'prebuilds', `linux-${arch}`, '@cairnfs+sys.glibc.node'));
}

function loadError(): Error {
  try {
    loadAddon(dir);
  } catch (err) {
    return err as Error;
  }
  throw new Error('loadAddon succeeded');
}

test('without a local build, the prebuilt binary for this platform loads and works', async () => {
  await ship(process.arch);
  await ship(otherArch);
  const addon = loadAddon<{ hasNewMountApi(): boolean; makedev(a: number, b: number): number }>(dir);
  expect(typeof addon.hasNewMountApi()).toBe('boolean');
  expect(addon.makedev(8, 1)).toBe(2049);
});

test('no binary for this platform: the error names the platform, what the package ships, and what a source build lacks', async () => {
  await ship('s390x', process.arch); // some other platform's directory only
  process.env.PATH = dir; // nothing on PATH: no compiler, make or python3
  const err = loadError();
  expect(err.message).toMatch(new RegExp(`no prebuilt binary for linux-${process.arch} \\(glibc [0-9.]+\\), Node ${process.versions.node}`));
  expect(err.message).toMatch(/the package ships linux-s390x\)/);
  expect(err.message).toMatch(/install a C\+\+ compiler \(g\+\+\), make, python3 \(missing here\), then run `npx node-gyp rebuild` in /);
  expect(err.message).not.toMatch(/npm rebuild/);
});

test('a binary that does not load (built for another cpu) is named, with the prebuilt binaries\' requirements', async () => {
  await ship(process.arch, otherArch);
  const err = loadError();
  expect(err.message).toContain(`its native addon ${join(dir, 'prebuilds', `linux-${process.arch}`, '@cairnfs+sys.glibc.node')} does not load`);
  expect(err.message).toMatch(/need glibc >= 2\.33/);
  expect(err.message).toMatch(/To build it from source, .*npx node-gyp rebuild/);
});
