// Decompression bombs on import: a few MB of gzip or zstd that inflate to hundreds of MB.
// maxUncompressedBytes stops them inside the stream (ERR_INVALID_ARCHIVE), before the
// layer is filled or held in memory, and the failed import leaves nothing behind.
import { spawn } from 'node:child_process';
import { mkdtemp, mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createGzip } from 'node:zlib';
import { openDriver, defaultRegistry, type StorageDriver } from '@cairnfs/core';
import { encodeHeader, tarTrailer } from '@cairnfs/archive';
import { overlay2Driver } from '@cairnfs/overlay2';
import { LayerStore } from '@cairnfs/image';
import { sha } from '@cairnfs/testkit';

defaultRegistry.register(overlay2Driver);

const BOMB_BYTES = 256 << 20; // what the bomb inflates to
const LIMIT = 16 << 20;

/** The layer tar, produced piece by piece: one file of BOMB_BYTES zeros. */
function* bombTar(): Generator<Buffer> {
  yield encodeHeader({ name: 'zeros', type: 'file', mode: 0o644, size: BOMB_BYTES });
  const zeros = Buffer.alloc(1 << 20);
  for (let left = BOMB_BYTES; left > 0; left -= zeros.length) yield zeros;
  yield tarTrailer();
}

async function gzipBomb(): Promise<Buffer> {
  const gz = createGzip({ level: 9 });
  const out: Buffer[] = [];
  gz.on('data', (c: Buffer) => out.push(c));
  const done = new Promise((resolve, reject) => { gz.on('end', resolve); gz.on('error', reject); });
  for (const piece of bombTar()) if (!gz.write(piece)) await new Promise((r) => gz.once('drain', r));
  gz.end();
  await done;
  return Buffer.concat(out);
}

async function zstdBomb(): Promise<Buffer> {
  const z = spawn('zstd', ['-q', '-19', '-c'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const out: Buffer[] = [];
  z.stdout.on('data', (c: Buffer) => out.push(c));
  const done = new Promise<void>((resolve, reject) => z.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`zstd exited ${code}`)))));
  for (const piece of bombTar()) if (!z.stdin.write(piece)) await new Promise((r) => z.stdin.once('drain', r));
  z.stdin.end();
  await done;
  return Buffer.concat(out);
}

/** A docker-save directory whose one layer is the given (compressed) blob. */
async function saveDirWith(dir: string, blob: Buffer): Promise<string> {
  await mkdir(join(dir, 'layer0'), { recursive: true });
  await writeFile(join(dir, 'layer0/layer.tar'), blob);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [sha(Buffer.from('not the real one'))] } }));
  const id = sha(config).slice(7);
  await writeFile(join(dir, `${id}.json`), config);
  await writeFile(join(dir, 'manifest.json'), JSON.stringify([{ Config: `${id}.json`, RepoTags: ['bomb:1'], Layers: ['layer0/layer.tar'] }]));
  return dir;
}

describe('decompression bombs on import (overlay2)', () => {
  let root: string;
  let work: string;
  let driver: StorageDriver;
  let store: LayerStore;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'cairn-bomb-'));
    work = await mkdtemp(join(tmpdir(), 'cairn-bomb-src-'));
    driver = await openDriver({ root, driver: 'overlay2' });
    store = await LayerStore.open(driver);
  });
  afterEach(async () => {
    delete process.env.CAIRN_ZSTD_JS;
    delete process.env.CAIRN_DECODE_IN_JS;
    await driver.cleanup();
    await rm(root, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  // gzip and zstd decoded in the applier's pass (the default for a blob in a file), by a
  // stream (CAIRN_DECODE_IN_JS=1: zlib and the addon's zstd handle), and by fzstd.
  for (const [kind, make] of [['gzip', gzipBomb], ['zstd', zstdBomb], ['gzip (stream, CAIRN_DECODE_IN_JS=1)', gzipBomb],
    ['zstd (stream, CAIRN_DECODE_IN_JS=1)', zstdBomb], ['zstd (JS decoder, CAIRN_ZSTD_JS=1)', zstdBomb]] as const) {
    test(`a ${kind} bomb (256 MiB from a few hundred KiB) is refused at maxUncompressedBytes with nothing left behind`, async () => {
      if (kind.includes('CAIRN_ZSTD_JS')) process.env.CAIRN_ZSTD_JS = '1'; // unset by afterEach
      if (kind.includes('CAIRN_DECODE_IN_JS')) process.env.CAIRN_DECODE_IN_JS = '1';
      const blob = await make();
      expect(blob.length).toBeLessThan(2 << 20);
      const src = await saveDirWith(work, blob);
      const rss0 = process.memoryUsage().rss;
      const t0 = Date.now();
      const err = await store.importImage(src, { maxUncompressedBytes: LIMIT }).catch((e: unknown) => e);
      const seconds = (Date.now() - t0) / 1000;
      expect(err).toMatchObject({ name: 'CairnError', code: 'ERR_INVALID_ARCHIVE' });
      expect((err as Error).message).toMatch(/maxUncompressedBytes/);
      // Stopped near the limit: far less than the bomb's 256 MiB was inflated or kept.
      expect(seconds).toBeLessThan(20);
      expect(process.memoryUsage().rss - rss0).toBeLessThan(128 << 20);
      expect(store.layers()).toEqual([]);
      expect(store.images()).toEqual([]);
      // No driver layer survives: overlay2 keeps only its l/ dir (and hidden bookkeeping).
      const leftovers = (await readdir(driver.home)).filter((n) => !n.startsWith('.') && n !== 'l');
      expect(leftovers).toEqual([]);
      expect(await readdir(join(driver.home, 'l'))).toEqual([]);
    }, 120_000);
  }

  test('a zstd layer whose frame asks for a 256 MiB window is ERR_INVALID_ARCHIVE before any of it is applied, and leaves nothing', async () => {
    // zstd --long=28 on a stream of unknown size writes windowLog 28 in the frame header.
    const z = spawn('sh', ['-c', 'head -c 4096 /dev/zero | zstd -q --long=28 -c'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const out: Buffer[] = [];
    for await (const c of z.stdout) out.push(c as Buffer);
    const src = await saveDirWith(work, Buffer.concat(out));
    const err = await store.importImage(src).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'CairnError', code: 'ERR_INVALID_ARCHIVE' });
    expect((err as Error).message).toMatch(/zstd.*memory/i);
    expect(store.layers()).toEqual([]);
    expect((await readdir(driver.home)).filter((n) => !n.startsWith('.') && n !== 'l')).toEqual([]);
  });

  test('the same bomb imports as far as the diff id check when the limit allows it (the limit is what stopped it)', async () => {
    const src = await saveDirWith(work, await gzipBomb());
    const err = await store.importImage(src, { maxUncompressedBytes: 512 << 20 }).catch((e: unknown) => e);
    // Inflated whole, then refused for the (deliberately wrong) diff id, not for its size.
    expect(err).toMatchObject({ name: 'CairnError' });
    expect((err as Error).message).not.toMatch(/maxUncompressedBytes/);
    expect(store.layers()).toEqual([]);
    expect((await stat(driver.home)).isDirectory()).toBe(true);
  }, 120_000);
});
