// zstd decoding in the addon (native/zstd.cc, src/zstd.ts): a libzstd resolved at run time,
// frames made by the real `zstd` tool (Debian package zstd, scripts/install-deps.sh).
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { ZstdDataError, zstdDecompressed, zstdLibrary } from '@cairnfs/sys';

const zstd = (input: Buffer, ...args: string[]): Buffer => execFileSync('zstd', ['-q', '-c', ...args], { input, maxBuffer: 1 << 30 });

/** Data that compresses like text (words repeated) with some random runs that do not. */
function sample(bytes: number): Buffer {
  const text = Buffer.from('layer tar overlay whiteout usr/lib\netc cairn opaque lower upper merged work '.repeat(900));
  const out = Buffer.allocUnsafe(bytes);
  for (let i = 0; i < bytes;) {
    const run = Math.random() < 0.05 ? randomBytes(64) : text.subarray(Math.floor(Math.random() * 1000), 1000 + Math.floor(Math.random() * 4000));
    i += run.copy(out, i);
  }
  return out;
}

async function* pieces(buf: Buffer, sizes: () => number): AsyncGenerator<Buffer> {
  for (let i = 0; i < buf.length;) { const n = Math.max(1, sizes()); yield buf.subarray(i, i + n); i += n; }
}

async function decodeAll(input: AsyncIterable<Uint8Array>, chunkBytes?: number): Promise<{ data: Buffer; largest: number; chunks: number }> {
  const out: Buffer[] = [];
  let largest = 0;
  for await (const c of zstdDecompressed(input, chunkBytes)) { out.push(c); largest = Math.max(largest, c.length); }
  return { data: Buffer.concat(out), largest, chunks: out.length };
}

test('this machine has a libzstd for the addon: Node 22.15+ its own, Node 20 the system libzstd.so.1', () => {
  const major = Number(process.versions.node.split('.')[0]);
  expect(zstdLibrary()).toBe(major >= 22 ? 'node' : 'libzstd.so.1');
});

test('a 6 MiB stream made by the zstd tool decodes to the same bytes, whatever the input cut, in output chunks no larger than asked', async () => {
  const data = sample(6 << 20);
  const z = zstd(data, '-3');
  for (const cut of [() => Math.floor(Math.random() * 300_000), () => z.length]) {
    const got = await decodeAll(pieces(z, cut), 100_000);
    expect(got.data.equals(data)).toBe(true);
    expect(got.largest).toBeLessThanOrEqual(100_000);
  }
  // A few bytes at a time (each a trip to the pool), on a smaller stream.
  const small = sample(200_000);
  const got = await decodeAll(pieces(zstd(small, '-3'), () => 1 + Math.floor(Math.random() * 7)), 4096);
  expect(got.data.equals(small)).toBe(true);
  expect(got.largest).toBeLessThanOrEqual(4096);
});

test('frames back to back (as zstd allows, like gzip members) decode to their concatenation', async () => {
  const a = sample(300_000);
  const b = randomBytes(200_000);
  const got = await decodeAll(pieces(Buffer.concat([zstd(a, '-1'), zstd(b, '-19'), zstd(Buffer.alloc(0))]), () => 4096));
  expect(got.data.equals(Buffer.concat([a, b]))).toBe(true);
});

test('a stream cut short inside a frame is a ZstdDataError saying it is truncated, not a shorter result', async () => {
  const z = zstd(sample(1 << 20), '-3');
  await expect(decodeAll(pieces(z.subarray(0, z.length - 100), () => 65536))).rejects.toThrow(/truncated/);
  await expect(decodeAll(pieces(z.subarray(0, z.length - 100), () => 65536))).rejects.toBeInstanceOf(ZstdDataError);
});

test('a corrupted block and trailing garbage after the last frame are ZstdDataErrors', async () => {
  const z = zstd(sample(1 << 20), '-3');
  const bad = Buffer.from(z);
  for (let i = 200; i < 260; i++) bad[i] = bad[i]! ^ 0x5a;
  await expect(decodeAll(pieces(bad, () => 65536))).rejects.toBeInstanceOf(ZstdDataError);
  await expect(decodeAll(pieces(Buffer.concat([z, Buffer.from('not a zstd frame')]), () => 65536))).rejects.toBeInstanceOf(ZstdDataError);
});

test('a frame that asks a 256 MiB window is refused before any memory is taken for it (the limit is 128 MiB)', async () => {
  // zstd --long=28 on a stream of unknown size writes windowLog 28 in the frame header.
  const z = execFileSync('sh', ['-c', 'head -c 100000 /dev/zero | zstd -q --long=28 -c'], { maxBuffer: 1 << 20 });
  await expect(decodeAll(pieces(z, () => z.length))).rejects.toThrow(/memory/i);
});

test('a 1 GiB bomb is decoded a bounded chunk at a time: a consumer that stops early stops the decoding', async () => {
  const bomb = execFileSync('sh', ['-c', 'head -c 1073741824 /dev/zero | zstd -q -3 -c'], { maxBuffer: 1 << 24 });
  expect(bomb.length).toBeLessThan(1 << 20);
  const before = process.memoryUsage().rss;
  let seen = 0;
  let chunks = 0;
  for await (const c of zstdDecompressed(pieces(bomb, () => 65536), 256 * 1024)) {
    seen += c.length;
    chunks++;
    expect(c.length).toBeLessThanOrEqual(256 * 1024);
    if (seen >= 64 << 20) break;
  }
  expect(seen).toBe(64 << 20);
  expect(chunks).toBe(256);
  expect(process.memoryUsage().rss - before).toBeLessThan(400 << 20); // far from the 1 GiB the stream holds
});

test('CAIRN_ZSTD_JS=1 makes zstdLibrary() report none, so callers take their own decoder', () => {
  process.env.CAIRN_ZSTD_JS = '1';
  try {
    expect(zstdLibrary()).toBeNull();
  } finally {
    delete process.env.CAIRN_ZSTD_JS;
  }
  expect(zstdLibrary()).not.toBeNull();
});
