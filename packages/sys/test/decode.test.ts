// Compressed blobs decoded inside the applier's pass (native/input_decoder.cc): gzip through
// Node's zlib, zstd through the libzstd the addon finds; the blobs are made by the real
// gzip and zstd tools (scripts/install-deps.sh) and by Node's zlib.
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { APPLIER_COMPRESSION, applierDecodes, openLayerApplier, type LayerApplier, type LayerApplierOptions } from '@cairnfs/sys';
import { scratch, type Scratch } from './helpers.js';
import { entry, trailer } from './tarbuild.js';

let s: Scratch;
beforeEach(async () => { s = await scratch(); });
afterEach(async () => {
  delete process.env.CAIRN_DECODE_IN_JS;
  delete process.env.CAIRN_ZSTD_JS;
  await s.cleanup();
});

const OPTS: LayerApplierOptions = { whiteouts: 'delete', noDevices: false, ownership: false, euid: 0, egid: 0, umask: 0o022 };
const tool = (cmd: string, input: Buffer, ...args: string[]): Buffer => execFileSync(cmd, ['-q', '-c', ...args], { input, maxBuffer: 1 << 30 });
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A layer tar of text-like and random files (about 3 MiB), and what each file holds. */
function layer(): { tar: Buffer; files: Map<string, Buffer> } {
  const files = new Map<string, Buffer>();
  files.set('etc/motd', Buffer.from('welcome to the layer\n'.repeat(2000)));
  files.set('bin/random', randomBytes(1 << 20));
  for (let i = 0; i < 40; i++) files.set(`usr/share/doc/f${i}`, Buffer.from(`doc ${i} `.repeat(1 + i * 900)));
  files.set('big', Buffer.concat([randomBytes(300_000), Buffer.alloc(1 << 20, 7)]));
  const tar = Buffer.concat([...[...files].map(([name, body]) => entry(name, body)), trailer()]);
  return { tar, files };
}

type Kind = keyof typeof APPLIER_COMPRESSION;

/**
 * Applies `blob` decoded in the pass, in slices of `slice()` bytes: read from a file
 * (writeRange, as an image archive's blob) or, with `written`, handed over as chunks
 * (write, as a registry pull's stream); returns what finish() and tapEnd() said.
 */
async function applyBlob(blob: Buffer, kind: Kind, opts: { slice?: () => number; maxBytes?: number; tapped?: boolean; async?: boolean; written?: boolean } = {}) {
  const dir = join(s.dir, `out-${Math.random().toString(36).slice(2)}`);
  mkdirSync(dir);
  const file = join(s.dir, `blob-${Math.random().toString(36).slice(2)}`);
  writeFileSync(file, blob);
  const fd = openSync(file, 'r');
  const a = openLayerApplier(dir, OPTS);
  try {
    if (opts.tapped ?? true) a.tap(2 ** 40, 'layer under test');
    expect(a.decompress(APPLIER_COMPRESSION[kind], opts.maxBytes ?? 2 ** 40, 'layer under test')).toBeNull();
    for (let pos = 0; pos < blob.length;) {
      const n = Math.max(1, Math.min(opts.slice?.() ?? blob.length, blob.length - pos));
      if (opts.written && opts.async) await a.writeAsync(blob.subarray(pos, pos + n));
      else if (opts.written) a.write(blob.subarray(pos, pos + n));
      else if (opts.async) await a.writeRangeAsync(fd, pos, n);
      else a.writeRange(fd, pos, n);
      pos += n;
    }
    const bytes = a.finish();
    const tap = opts.tapped ?? true ? a.tapEnd() : undefined;
    return { dir, bytes, tap, a };
  } catch (err) {
    a.abort();
    throw err;
  } finally {
    a.close();
    closeSync(fd);
  }
}

function expectFiles(dir: string, files: Map<string, Buffer>): void {
  for (const [name, body] of files) expect(readFileSync(join(dir, name)).equals(body)).toBe(true);
}

async function failure(p: Promise<unknown>): Promise<{ cairnCode?: string; message: string }> {
  const err = await p.then(() => null, (e: unknown) => e);
  expect(err).not.toBeNull();
  return err as { cairnCode?: string; message: string };
}

test('this machine decodes both kinds in the pass, and CAIRN_DECODE_IN_JS / CAIRN_ZSTD_JS turn it off', () => {
  expect(applierDecodes('gzip')).toBe(true);
  expect(applierDecodes('zstd')).toBe(true);
  process.env.CAIRN_ZSTD_JS = '1';
  expect(applierDecodes('zstd')).toBe(false);
  expect(applierDecodes('gzip')).toBe(true);
  process.env.CAIRN_DECODE_IN_JS = '1';
  expect(applierDecodes('gzip')).toBe(false);
});

describe.each([
  ['gzip (the gzip tool)', 'gzip', (t: Buffer) => tool('gzip', t, '-6')],
  ['gzip (Node zlib, level 1)', 'gzip', (t: Buffer) => gzipSync(t, { level: 1 })],
  ['zstd (the zstd tool, -3)', 'zstd', (t: Buffer) => tool('zstd', t, '-3')],
  ['zstd (the zstd tool, -19 --long)', 'zstd', (t: Buffer) => tool('zstd', t, '-19', '--long=24')],
] as const)('%s', (_name, kind, compress) => {
  test('decoded in the pass: the files, the digest of the uncompressed tar and its byte count, whatever the read slices', async () => {
    const { tar, files } = layer();
    const blob = compress(tar);
    expect(blob.length).toBeLessThan(tar.length);
    for (const slice of [() => blob.length, () => 1 + Math.floor(Math.random() * 70_000)]) {
      for (const [async, written] of [[false, false], [true, false], [false, true], [true, true]]) {
        const got = await applyBlob(blob, kind, { slice, async, written });
        expectFiles(got.dir, files);
        expect(got.tap!.digest).toBe(sha256(tar));
        expect(got.tap!.bytes).toBe(tar.length);
        expect(got.tap!.exact).toBe(true);
      }
    }
  });

  test('a blob cut into pieces of 1 to 9 bytes decodes the same (each piece a separate read and write)', async () => {
    const files = new Map([['a', Buffer.from('small text file '.repeat(3000))], ['b', randomBytes(20_000)]]);
    const tar = Buffer.concat([...[...files].map(([name, body]) => entry(name, body)), trailer()]);
    const blob = compress(tar);
    for (const written of [false, true]) {
      const got = await applyBlob(blob, kind, { slice: () => 1 + Math.floor(Math.random() * 9), written });
      expectFiles(got.dir, files);
      expect(got.tap!.digest).toBe(sha256(tar));
    }
  });

  test('untapped: the files, the read stopping once the archive ends', async () => {
    const { tar, files } = layer();
    const got = await applyBlob(compress(tar), kind, { tapped: false, slice: () => 100_000 });
    expectFiles(got.dir, files);
    expect(got.bytes).toBe([...files.values()].reduce((n, b) => n + b.length, 0));
  });

  test('a blob cut short is ERR_INVALID_ARCHIVE saying it is corrupt or truncated, not a shorter layer (read or written)', async () => {
    const blob = compress(layer().tar);
    for (const written of [false, true]) {
      const err = await failure(applyBlob(blob.subarray(0, blob.length - 1000), kind, { slice: () => 65_536, written }));
      expect(err.cairnCode).toBe('ERR_INVALID_ARCHIVE');
      expect(err.message).toMatch(new RegExp(`a ${kind} layer blob is corrupt or truncated`));
    }
  });

  test('a flipped byte in the middle is ERR_INVALID_ARCHIVE (a zlib or zstd checksum or format error)', async () => {
    const blob = Buffer.from(compress(layer().tar));
    for (let i = 0; i < 64; i++) blob[Math.floor(blob.length / 2) + i] ^= 0x5a;
    const err = await failure(applyBlob(blob, kind, { slice: () => 65_536 }));
    expect(err.cairnCode).toBe('ERR_INVALID_ARCHIVE');
  });

  test('output past maxOutputBytes is refused as a bomb, naming maxUncompressedBytes, before the applier writes past it', async () => {
    const zeros = Buffer.concat([entry('zeros', Buffer.alloc(64 << 20)), trailer()]);
    const blob = compress(zeros);
    expect(blob.length).toBeLessThan(1 << 20);
    const limit = 4 << 20;
    const err = await failure(applyBlob(blob, kind, { maxBytes: limit, slice: () => 65_536 }));
    expect(err.cairnCode).toBe('ERR_INVALID_ARCHIVE');
    expect(err.message).toMatch(/layer under test decompresses to more than 4194304 bytes \(maxUncompressedBytes\)/);
    // abort() removed the half-written file: nothing of it is left.
    const dirs = readdirSync(s.dir).filter((n) => n.startsWith('out-'));
    expect(dirs.flatMap((d) => readdirSync(join(s.dir, d)))).toEqual([]);
  });
});

test('gzip members back to back decode as their concatenation; zero padding after the last is ignored; other trailing bytes are refused', async () => {
  const { tar, files } = layer();
  const cut = 1_000_000;
  const members = Buffer.concat([tool('gzip', tar.subarray(0, cut)), gzipSync(tar.subarray(cut))]);
  const two = await applyBlob(members, 'gzip', { slice: () => 50_000 });
  expectFiles(two.dir, files);
  expect(two.tap!.digest).toBe(sha256(tar));

  const padded = await applyBlob(Buffer.concat([members, Buffer.alloc(4096)]), 'gzip', { slice: () => 50_000 });
  expect(padded.tap!.digest).toBe(sha256(tar));

  const err = await failure(applyBlob(Buffer.concat([members, Buffer.from('trailing junk')]), 'gzip'));
  expect(err.cairnCode).toBe('ERR_INVALID_ARCHIVE');
  expect(err.message).toMatch(/gzip layer blob is corrupt or truncated/);
});

test('zstd frames back to back decode as their concatenation; trailing bytes that are not a frame are refused', async () => {
  const { tar, files } = layer();
  const frames = Buffer.concat([tool('zstd', tar.subarray(0, 700_000), '-1'), tool('zstd', tar.subarray(700_000), '-9'), tool('zstd', Buffer.alloc(0))]);
  const got = await applyBlob(frames, 'zstd', { slice: () => 33_333 });
  expectFiles(got.dir, files);
  expect(got.tap!.digest).toBe(sha256(tar));
  const err = await failure(applyBlob(Buffer.concat([frames, Buffer.from('not a frame at all')]), 'zstd'));
  expect(err.cairnCode).toBe('ERR_INVALID_ARCHIVE');
});

test('a zstd frame asking for a 256 MiB window is refused before anything is decoded', async () => {
  const blob = execFileSync('sh', ['-c', 'head -c 4096 /dev/zero | zstd -q --long=28 -c']);
  const err = await failure(applyBlob(blob, 'zstd'));
  expect(err.cairnCode).toBe('ERR_INVALID_ARCHIVE');
  expect(err.message).toMatch(/zstd.*memory/i);
});

test('decompress refuses an unknown kind', () => {
  const dir = join(s.dir, 'k');
  mkdirSync(dir);
  const a: LayerApplier = openLayerApplier(dir, OPTS);
  try {
    expect(() => a.decompress(3, 1, 'x')).toThrow(/kind/);
  } finally {
    a.close();
  }
});

test('the byte limits of tap and decompress refuse NaN and negatives (a TypeError, not a cast); Infinity means no limit', () => {
  const dir = join(s.dir, 'caps');
  mkdirSync(dir);
  const a: LayerApplier = openLayerApplier(dir, OPTS);
  try {
    for (const bad of [NaN, -1, -1e300, -Infinity]) {
      expect(() => a.tap(bad, 'x')).toThrow(/"maxLogicalBytes" argument must be a non-negative number/);
      expect(() => a.decompress(APPLIER_COMPRESSION.gzip, bad, 'x')).toThrow(/"maxOutputBytes" argument must be a non-negative number/);
    }
    expect(a.tap(Infinity, 'x')).toBe(true);
    expect(a.decompress(APPLIER_COMPRESSION.gzip, Infinity, 'x')).toBeNull();
  } finally {
    a.close();
  }
});
