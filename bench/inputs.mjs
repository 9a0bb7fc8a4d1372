// Deterministic benchmark inputs: the same seed makes the same tree, so results from
// different runs compare like with like and no large file lives in the repository.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';

function prng(seed) {
  let s = seed >>> 0;
  return () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 0x100000000;
  };
}

/**
 * Makes a tree of `files` regular files totalling about `totalBytes`, spread over
 * nested directories like a distro image (many small files, a few large ones), plus
 * symlinks and hardlinks.
 */
export async function makeTree(dir, { files = 20000, totalBytes = 200 * 1024 * 1024, seed = 42 } = {}) {
  const rand = prng(seed);
  await mkdir(dir, { recursive: true });
  const dirs = [];
  for (let i = 0; i < Math.max(1, Math.floor(files / 40)); i++) {
    const parent = dirs.length && rand() < 0.7 ? dirs[Math.floor(rand() * dirs.length)] : '';
    const d = join(parent, `d${i}`);
    dirs.push(d);
    await mkdir(join(dir, d), { recursive: true });
  }
  // Sizes follow a heavy tail: most files small, a few carry most of the bytes.
  const weights = Array.from({ length: files }, () => Math.pow(rand(), 6));
  const sum = weights.reduce((a, b) => a + b, 0);
  const chunk = Buffer.alloc(1 << 20);
  for (let i = 0; i < chunk.length; i++) chunk[i] = Math.floor(rand() * 256);
  let written = 0;
  for (let i = 0; i < files; i++) {
    const size = Math.floor((weights[i] / sum) * totalBytes);
    const path = join(dir, dirs[i % dirs.length], `f${i}`);
    const offset = Math.floor(rand() * (chunk.length - Math.min(size, chunk.length)));
    const body = size <= chunk.length ? chunk.subarray(offset, offset + size) : Buffer.concat(Array(Math.ceil(size / chunk.length)).fill(chunk)).subarray(0, size);
    await writeFile(path, body);
    written += size;
  }
  return { dir, files, bytes: written };
}

/** GNU tar of a tree, as the reference producer (PAX format, numeric owners, sorted). */
export function tarTree(dir, tarPath) {
  execFileSync('tar', ['--format=pax', '--numeric-owner', '--sort=name', '-C', dir, '-cf', tarPath, '.']);
  return tarPath;
}

/**
 * A generated tree and its GNU tar, kept between runs in a cache directory on the
 * repository's disk (same seed, same bytes), so repeated runs skip generation.
 * Returns { dir, tar, files, bytes }.
 */
export function cachedInput(name, params) {
  return cached(`${name}-${params.files}-${params.totalBytes}-${params.seed ?? 42}`, async (root) => {
    const info = await makeTree(join(root, 'tree'), params);
    const tar = tarTree(info.dir, join(root, 'layer.tar'));
    return { dir: info.dir, tar, files: info.files, bytes: info.bytes };
  });
}

/**
 * What `build(root)` made for `key` in an earlier run, read from `root/done.json` in the
 * cache directory (CAIRN_BENCH_CACHE, default /var/tmp/cairn-bench-inputs); else `root` is
 * emptied, built and its result recorded (last, so an interrupted build is redone).
 */
export async function cached(key, build) {
  const { existsSync, mkdirSync, readFileSync, writeFileSync, rmSync } = await import('node:fs');
  const root = join(process.env.CAIRN_BENCH_CACHE ?? '/var/tmp/cairn-bench-inputs', key);
  const done = join(root, 'done.json');
  if (existsSync(done)) return JSON.parse(readFileSync(done, 'utf8'));
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });
  const result = await build(root);
  writeFileSync(done, JSON.stringify(result));
  return result;
}
