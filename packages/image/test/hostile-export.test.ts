// Byte-exact export must never read anything but the layer's own regular files
// (issue 13, finding 1). Export rebuilds a layer from the tar-split recorded at import by
// re-opening each file: an image whose later entry turns file `x` into a block device
// made it copy host disk bytes into the export; a fifo there hung a libuv thread forever.
// Now every recorded file is opened beneath the layer root without following links and
// fstat-checked (regular, the recorded size) before the first byte is written, and a
// layer whose files were replaced within its own tar is marked inexact at import.
import { mkdtemp, rm, symlink, truncate, unlink } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { readdirSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CairnError, defaultRegistry, openDriver, type StorageDriver } from '@cairnfs/core';
import { readTar } from '@cairnfs/archive';
import { overlay2Driver } from '@cairnfs/overlay2';
import { LayerStore, exportImage } from '@cairnfs/image';
import { dirEntry, fileEntry, packedTarOf as tarOf } from '@cairnfs/testkit';
import { CANARY, canaryDisk, drain, saveDir, type CanaryDisk } from './hostile.js';

defaultRegistry.register(overlay2Driver);

const CONTENT = Buffer.alloc(8192, 0x41);

/** `name:type` of each entry of a tar held in memory. */
async function entryTypes(tar: Buffer): Promise<string[]> {
  const types: string[] = [];
  for await (const { header } of readTar((async function* () { yield tar; })())) types.push(`${header.name}:${header.type}`);
  return types;
}

describe('byte-exact export of hostile layers (overlay2)', () => {
  let root: string;
  let work: string;
  let driver: StorageDriver;
  let store: LayerStore;
  let disk: CanaryDisk;
  beforeAll(async () => { work = await mkdtemp(join(tmpdir(), 'cairn-hexport-')); disk = await canaryDisk(work); });
  afterAll(async () => { disk.detach(); await rm(work, { recursive: true, force: true }); });
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'cairn-hexport-root-'));
    driver = await openDriver({ root, driver: 'overlay2' });
    store = await LayerStore.open(driver);
  });
  afterEach(async () => {
    await driver.cleanup();
    await rm(root, { recursive: true, force: true });
  });

  /** The layer's own directory on disk (overlay2's `<id>/diff`): where its files can be changed behind the store's back. */
  const diffDir = (chain: string) => join(driver.home, store.layer(chain).cacheId, 'diff');

  async function importLayer(entries: Parameters<typeof tarOf>[0], name: string) {
    const layer = await tarOf(entries);
    const [img] = await store.importImage(await saveDir(join(work, name), [layer]));
    return { img: img!, chain: img!.layers[0]!, layer };
  }

  test('a file replaced by a block device later in the same tar: no host disk byte in exportLayer, exportImage refuses before its first byte', async () => {
    const { img, chain } = await importLayer([fileEntry('x', CONTENT), { header: { name: 'x', type: 'block', mode: 0o600, devmajor: disk.major, devminor: disk.minor } }], 'blk');
    expect(store.layer(chain).exact).toBe(false);
    const layerOut = await drain(store.exportLayer(chain));
    expect(layerOut.bytes.includes(CANARY)).toBe(false);
    expect(layerOut.error).toBeUndefined();
    // The fallback is the driver's diff: x is the block device, as on disk.
    expect(await entryTypes(layerOut.bytes)).toEqual(['x:block']);
    const imageOut = await drain(exportImage(store, [img.id]));
    expect(imageOut.bytes.length).toBe(0);
    expect(imageOut.error).toBeInstanceOf(CairnError);
    expect((imageOut.error as CairnError).code).toBe('ERR_NOT_SUPPORTED');
    expect((imageOut.error as CairnError).message).toMatch(/cannot be rebuilt byte for byte/);
  });

  test('a file replaced by a directory `x/` later in the same tar: inexact, exportLayer gives the driver\'s diff, exportImage refuses before its first byte', async () => {
    const { img, chain } = await importLayer([fileEntry('x', CONTENT), { header: { name: 'x/', type: 'dir', mode: 0o755 } }], 'dirover');
    expect(store.layer(chain).exact).toBe(false);
    const out = await drain(store.exportLayer(chain));
    expect(out.error).toBeUndefined();
    expect(await entryTypes(out.bytes)).toEqual(['x/:dir']);
    const imageOut = await drain(exportImage(store, [img.id]));
    expect([imageOut.bytes.length, (imageOut.error as CairnError).code]).toEqual([0, 'ERR_NOT_SUPPORTED']);
  });

  test('a file replaced by a fifo later in the same tar: export neither hangs nor blocks a thread', async () => {
    const { img, chain } = await importLayer([fileEntry('x', CONTENT), { header: { name: 'x', type: 'fifo', mode: 0o600 } }], 'fifo');
    const started = Date.now();
    const out = await drain(store.exportLayer(chain), 10_000);
    expect(out.error).toBeUndefined();
    const img2 = await drain(exportImage(store, [img.id]), 10_000);
    expect((img2.error as CairnError).code).toBe('ERR_NOT_SUPPORTED');
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  // The layer was exact at import and its files changed on disk afterwards (a process with
  // access to the layer, a bug): the export must fail before its first byte, never read
  // through what now stands there.
  const tampers: Array<[string, (path: string) => Promise<void>, RegExp]> = [
    ['a block device holding host disk bytes', async (p) => { await unlink(p); execFileSync('mknod', [p, 'b', String(disk.major), String(disk.minor)]); }, /block device/],
    ['a fifo', async (p) => { await unlink(p); execFileSync('mkfifo', [p]); }, /fifo/],
    ['a symlink to a host file', async (p) => { await unlink(p); await symlink('/etc/passwd', p); }, /symlink/],
    ['a symlink to another file of the layer', async (p) => { await unlink(p); await symlink('y', p); }, /symlink/],
    ['a shorter file (a recorded segment past its end)', async (p) => { await truncate(p, 100); }, /size|shorter/],
    ['nothing (removed)', async (p) => { await unlink(p); }, /missing|no longer/],
  ];
  test.each(tampers)('a recorded file replaced on disk by %s: exportLayer fails before its first byte', async (_what, tamper, why) => {
    const { chain } = await importLayer([dirEntry('d'), fileEntry('d/x', CONTENT), fileEntry('y', 'other')], 'tamper');
    expect(store.layer(chain).exact).toBe(true);
    await tamper(join(diffDir(chain), 'd/x'));
    const out = await drain(store.exportLayer(chain), 10_000);
    expect(out.bytes.length).toBe(0);
    expect(out.error).toBeInstanceOf(CairnError);
    expect((out.error as CairnError).message).toMatch(why);
  });

  // exportImage checks each layer's files while the layer before it streams (export.ts).
  async function threeLayers(name: string) {
    const big = Buffer.alloc(3 << 20, 0x42);
    const layers = [await tarOf([fileEntry('one', big)]), await tarOf([dirEntry('d'), fileEntry('d/x', 'SECOND-LAYER-CONTENT')]), await tarOf([fileEntry('three', 'third')])];
    const [img] = await store.importImage(await saveDir(join(work, name), layers));
    return img!;
  }
  const blobName = (chain: string) => `blobs/sha256/${store.layer(chain).diffId.slice('sha256:'.length)}`;

  test('exportImage with the second layer\'s file now a symlink to a host file: the first layer streams, then the export fails before the second layer\'s header', async () => {
    const img = await threeLayers('ahead-tamper');
    await unlink(join(diffDir(img.layers[1]!), 'd/x'));
    await symlink('/etc/passwd', join(diffDir(img.layers[1]!), 'd/x'));
    const out = await drain(exportImage(store, [img.id]), 10_000);
    expect((out.error as CairnError).code).toBe('ERR_UNSAFE_ARCHIVE');
    expect((out.error as CairnError).message).toMatch(/d\/x is a symlink/);
    expect(out.bytes.includes(blobName(img.layers[0]!))).toBe(true);
    expect(out.bytes.length).toBeGreaterThanOrEqual(3 << 20);
    expect(out.bytes.includes(blobName(img.layers[1]!))).toBe(false);
    expect(out.bytes.includes('root:')).toBe(false);
  });

  test('exportImage dropped by its reader inside the first layer (the second one\'s check already started) leaves no fd open and no pin', async () => {
    const img = await threeLayers('ahead-drop');
    // This process's fds on the store's files (a replay holds its layer dir and its split file).
    const fds = () => readdirSync('/proc/self/fd').filter((fd) => {
      try { return readlinkSync(`/proc/self/fd/${fd}`).startsWith(root); } catch { return false; }
    }).length;
    const before = fds();
    for (let i = 0; i < 3; i++) {
      const stream = exportImage(store, [img.id]);
      // 'close' comes once the export's own cleanup (its replays closed, its pin dropped) is done.
      const closed = new Promise((resolve) => stream.once('close', resolve));
      for await (const chunk of stream) { expect((chunk as Buffer).length).toBeGreaterThan(0); break; }
      await closed;
    }
    expect(fds()).toBe(before);
    // Unpinned: the image can be removed and its layers go with it.
    await store.removeImage(img.id);
    expect(store.layers().length).toBe(0);
  });

  test('a sparse file is rebuilt exactly, and its segments are checked against the file', async () => {
    // GNU tar writes sparse files as PAX 1.0: build one and import it.
    const src = join(work, 'sparse-src');
    execFileSync('mkdir', ['-p', src]);
    execFileSync('sh', ['-c', `printf head > ${src}/s && truncate -s 64M ${src}/s && printf tail >> ${src}/s`]);
    const layer = execFileSync('tar', ['--sparse', '--posix', '-C', src, '-cf', '-', 's'], { maxBuffer: 1 << 20 });
    const [img] = await store.importImage(await saveDir(join(work, 'sparse'), [layer]));
    const chain = img!.layers[0]!;
    const out = await drain(store.exportLayer(chain));
    expect(out.error).toBeUndefined();
    expect(out.bytes.equals(layer)).toBe(true);
    await truncate(join(diffDir(chain), 's'), 1024);
    const bad = await drain(store.exportLayer(chain));
    expect(bad.bytes.length).toBe(0);
    expect((bad.error as CairnError).code).toBe('ERR_INVALID_ARCHIVE');
  });
});
