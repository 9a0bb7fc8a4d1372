// The import pass in the addon (issue 19): the native applier hashes a layer and records its
// tar-split in the same pass that applies it, reading a plain blob's byte range itself. Its
// digest, record and `exact` must be what node:crypto and SplitRecorder (the JS path, which
// any other consumer of the tar still takes) make of the same bytes, on the hostile
// catalogue and on ordinary GNU tar layers; a range is applied exactly; and a wrong diff id
// on the range path leaves nothing.
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, symlinkSync, linkSync, writeFileSync, appendFileSync, truncateSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { defaultRegistry, isValidId, type StorageDriver } from '@cairnfs/core';
import { TappedTar, applyLayer, encodeHeader, type ApplyOptions } from '@cairnfs/archive';
import { overlay2Driver } from '@cairnfs/overlay2';
import { vfsDriver } from '@cairnfs/vfs';
import { LayerStore } from '@cairnfs/image';
import { sampleLayers, tarDir, writeDockerSave, writeOciLayout } from '@cairnfs/testkit';
import { SplitRecorder } from '../src/tarsplit.js';
import { freshStore } from './registry-fixture.js';
import { cases, dir, entry, file, reseal, sym, tar } from '../../archive/test/hostile-cases.js';

for (const f of [vfsDriver, overlay2Driver]) defaultRegistry.register(f);

const isRoot = process.getuid?.() === 0;
const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const NO_CAP = 2 ** 50;

async function* chunked(data: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

interface Pass { digest: string; exact: boolean; bytes: number; records: Buffer }

/**
 * The native pass: `data` applied into `layer` through a TappedTar, either as a byte range
 * of a file with junk before and after it, or as a stream of 700-byte chunks.
 */
async function nativePass(work: string, layer: string, data: Buffer, how: 'range' | 'stream', opts: ApplyOptions = {}, rawRecords = false): Promise<Pass> {
  const records: Buffer[] = [];
  let gz: boolean | undefined;
  const tap = {
    maxLogicalBytes: NO_CAP, what: 'test layer', rawRecords,
    onRecord: (r: Buffer, gzipped: boolean) => { records.push(Buffer.from(r)); expect(gz ?? gzipped).toBe(gzipped); gz = gzipped; },
  };
  const fallback: AsyncIterable<Uint8Array> = { [Symbol.asyncIterator]: () => { throw new Error('the JS fallback was taken'); } };
  let fd = -1;
  let source: ConstructorParameters<typeof TappedTar>[0];
  if (how === 'range') {
    const blob = join(work, 'blob');
    writeFileSync(blob, Buffer.concat([randomBytes(1000), data, randomBytes(777)]));
    fd = openSync(blob, 'r');
    source = { fd, start: 1000, length: data.length };
  } else {
    source = chunked(data, 700);
  }
  const t = new TappedTar(source, tap, fallback);
  try {
    await applyLayer(layer, t, opts);
  } finally {
    if (fd >= 0) closeSync(fd);
  }
  expect(t.claimed).toBe(true);
  // Node exports zlib, so the addon gzips the records unless told not to.
  expect(gz).toBe(!rawRecords);
  return { ...t.result!, records: gz ? gunzipSync(Buffer.concat(records)) : Buffer.concat(records) };
}

/** The JS path: node:crypto and SplitRecorder over the same bytes in 700-byte chunks. */
async function jsPass(data: Buffer): Promise<Pass> {
  const rec = new SplitRecorder({ maxLogicalBytes: NO_CAP, what: 'test layer' });
  for (let i = 0; i < data.length; i += 700) rec.write(data.subarray(i, i + 700));
  const records = gunzipSync(await rec.finish());
  return { digest: sha256(data), exact: rec.exact, bytes: data.length, records };
}

type Item = { kind: 'R'; bytes: Buffer } | { kind: 'S'; path: string; size: number } | { kind: 'F'; path: string; position: number; length: number };

function parse(records: Buffer): Item[] {
  const out: Item[] = [];
  for (let i = 0; i < records.length;) {
    const kind = String.fromCharCode(records[i]!);
    const len = records.readUInt32BE(i + 1);
    i += 5;
    if (kind === 'R') { out.push({ kind, bytes: records.subarray(i, i + len) }); i += len; continue; }
    if (kind === 'Z') { out.push({ kind: 'R', bytes: Buffer.alloc(len) }); continue; }
    const path = records.subarray(i, i + len).toString('latin1'); // the bytes as recorded, not decoded
    i += len;
    if (kind === 'S') { out.push({ kind, path, size: records.readDoubleBE(i) }); i += 8; continue; }
    if (kind !== 'F') throw new Error(`record kind ${kind}`);
    out.push({ kind, path, position: records.readDoubleBE(i), length: records.readDoubleBE(i + 8) });
    i += 16;
  }
  return out;
}

/**
 * What a record means, independent of where the input was cut into chunks (which moves
 * raw-record boundaries and where a size record falls among raw bytes): the rebuilt
 * stream (raw runs joined, contiguous file segments joined), the size records in order,
 * and the size record in force at each file segment.
 */
function meaning(records: Buffer) {
  const stream: Array<string | [string, number, number]> = [];
  const sizes: Array<[string, number]> = [];
  const sizeAtFile: string[] = [];
  let raw: Buffer[] = [];
  let last: Item & { kind: 'S' } | undefined;
  const flushRaw = () => { if (raw.length) stream.push(Buffer.concat(raw).toString('hex')); raw = []; };
  for (const it of parse(records)) {
    if (it.kind === 'R') { raw.push(it.bytes); continue; }
    if (it.kind === 'S') { sizes.push([it.path, it.size]); last = it; continue; }
    flushRaw();
    sizeAtFile.push(last && last.path === it.path ? `${it.path}=${last.size}` : `${it.path}=?`);
    const prev = stream[stream.length - 1];
    if (Array.isArray(prev) && prev[0] === it.path && prev[1] + prev[2] === it.position) prev[2] += it.length;
    else stream.push([it.path, it.position, it.length]);
  }
  flushRaw();
  return { stream, sizes, sizeAtFile };
}

function expectSamePass(native: Pass, js: Pass): void {
  expect(native.digest).toBe(js.digest);
  expect(native.bytes).toBe(js.bytes);
  expect(native.exact).toBe(js.exact);
  expect(meaning(native.records)).toEqual(meaning(js.records));
}

/** Ordinary layers as GNU tar writes them: pax and gnu formats, sparse files, long names, links, a whiteout, UTF-8 names. */
function gnuTarLayers(work: string): Array<[string, Buffer]> {
  const tree = join(work, 'tree');
  mkdirSync(join(tree, 'dir/sub'), { recursive: true });
  for (const n of [0, 1, 511, 512, 513, 4096, 100_000]) writeFileSync(join(tree, `dir/f${n}`), randomBytes(n));
  writeFileSync(join(tree, `dir/sub/${'long-name-'.repeat(15)}.txt`), 'long');
  writeFileSync(join(tree, 'dir/é-ü-名前'), 'utf-8 name');
  writeFileSync(join(tree, '.wh.gone'), '');
  symlinkSync('dir/f1', join(tree, 'link'));
  linkSync(join(tree, 'dir/f4096'), join(tree, 'hard'));
  const sparse = join(tree, 'sparse');
  writeFileSync(sparse, 'head');
  truncateSync(sparse, 3 << 20);
  const fd = openSync(sparse, 'r+');
  try { writeFileSync(fd, 'middle'); } finally { closeSync(fd); }
  appendFileSync(sparse, 'tail');
  const out: Array<[string, Buffer]> = [];
  for (const format of ['pax', 'gnu']) {
    const t = join(work, `layer-${format}.tar`);
    execFileSync('tar', [`--format=${format}`, '--sparse', '-C', tree, '-cf', t, '.']);
    out.push([`GNU tar --format=${format} --sparse`, readFileSync(t)]);
  }
  return out;
}

/** A file whose name is not valid UTF-8 (bytes ff, c3 28, e2 82): recorded as JS decodes it. */
function invalidUtf8Layer(): Buffer {
  const h = encodeHeader({ name: 'AAAAAAAAAA', type: 'file', mode: 0o644, size: 3 });
  Buffer.from([0x62, 0xff, 0xc3, 0x28, 0xe2, 0x82, 0x2e, 0x78, 0xf0, 0x90]).copy(h, 0);
  reseal(h);
  return tar(h, Buffer.concat([Buffer.from('abc'), Buffer.alloc(509)]), file('ok', 'fine'));
}

describe('the import pass in the addon', () => {
  let work: string;
  let canary: string;
  let layer: string;
  beforeEach(() => {
    work = mkdtempSync(join(tmpdir(), 'cairn-import-pass-'));
    canary = join(work, 'canary');
    layer = join(work, 'layer');
    mkdirSync(join(canary, 'dir'), { recursive: true });
    writeFileSync(join(canary, 'secret'), 'do not touch');
    mkdirSync(layer);
  });
  afterEach(() => rmSync(work, { recursive: true, force: true }));

  const applicable = cases.filter((c) => c.code === 'ok' && (isRoot || !c.rootOnly));
  test('the hostile catalogue has layers that apply to compare on', () => expect(applicable.length).toBeGreaterThanOrEqual(12));

  for (const c of applicable) {
    for (const how of ['range', 'stream'] as const) {
      test(`hostile catalogue, ${how}: ${c.name}`, async () => {
        const ctx = { canary, layer };
        c.prepare?.(ctx);
        const data = c.tar(ctx);
        expectSamePass(await nativePass(work, layer, data, how, c.opts), await jsPass(data));
        c.after?.(ctx);
      });
    }
  }

  test('hostile catalogue: a refused layer is refused on the range path with its code', async () => {
    const refused = cases.filter((c) => c.code !== 'ok' && !c.prepare && !c.opts);
    expect(refused.length).toBeGreaterThan(30);
    for (const c of refused) {
      const l = join(work, `l-${refused.indexOf(c)}`);
      mkdirSync(l);
      const err = await nativePass(work, l, c.tar({ canary, layer: l }), 'range').catch((e: unknown) => e);
      expect([c.name, err]).toEqual([c.name, expect.objectContaining({ code: c.code })]);
    }
    expect(readFileSync(join(canary, 'secret'), 'utf8')).toBe('do not touch');
  });

  test('ordinary GNU tar layers (pax and gnu, sparse, long and UTF-8 names, links, whiteout): same digest, record and exact, on both paths and threads', async () => {
    for (const [name, data] of [...gnuTarLayers(work), ['a name that is not UTF-8', invalidUtf8Layer()] as [string, Buffer]]) {
      const js = await jsPass(data);
      for (const how of ['range', 'stream'] as const) {
        for (const [offThread, raw] of [[true, false], [false, false], [true, true]]) {
          const l = join(work, `l-${name.replace(/\W+/g, '-')}-${how}-${offThread}-${raw}`);
          mkdirSync(l);
          const native = await nativePass(work, l, data, how, { offThread }, raw);
          expect([name, how, offThread, native.digest]).toEqual([name, how, offThread, js.digest]);
          expectSamePass(native, js);
        }
      }
    }
  });

  test('exact decided by normalised names as SplitRecorder decides it: a file named again through ./, // or a trailing slash, whiteouts of earlier files, opaque markers, a name written over by a link or a dir', async () => {
    const layers: Array<[string, Buffer, boolean]> = [
      ['distinct names', tar(dir('d/'), file('d/a'), file('./d/b'), file('e')), true],
      ['one file through ./ and //', tar(file('a'), file('./a')), false],
      ['doubled slashes', tar(dir('d/'), file('d/x'), file('d//x')), false],
      ['a whiteout of an earlier file', tar(dir('d/'), file('d/x'), file('d/.wh.x', '')), false],
      ['a whiteout of a name not in the layer', tar(dir('d/'), file('d/.wh.x', ''), file('d/y')), true],
      ['an opaque marker', tar(dir('d/'), file('d/x'), file('d/.wh..wh..opq', '')), true],
      ['a whiteout with content', tar(dir('d/'), file('d/.wh.x', 'content')), false],
      ['a symlink over a file', tar(file('a'), sym('a', 'elsewhere')), false],
      ['a dir named like a file, trailing slash', tar(file('a'), dir('a/')), false],
      ['a dir named twice', tar(dir('d'), dir('./d/')), true],
      ['a whiteout at the root of an earlier root file', tar(file('x'), file('.wh.x', '')), false],
    ];
    for (const [name, data, exact] of layers) {
      const js = await jsPass(data);
      expect([name, js.exact]).toEqual([name, exact]);
      const l = join(work, `exact-${name.replace(/\W+/g, '-')}`);
      mkdirSync(l);
      const native = await nativePass(work, l, data, 'range');
      expect([name, native.exact]).toEqual([name, exact]);
    }
  });

  test('layers of many small files and of large files: records over several slices and raw runs over 1 MiB agree', async () => {
    const parts: Buffer[] = [];
    for (let i = 0; i < 3000; i++) parts.push(file(`small/${i}`, 'x'.repeat(i % 700)));
    for (let i = 0; i < 3; i++) parts.push(entry({ name: `big/${i}`, type: 'file', mode: 0o644, size: 3 << 20 }, randomBytes(3 << 20)));
    const data = Buffer.concat([tar(...parts), randomBytes(1500)]); // trailing bytes after the end marker are recorded too
    const js = await jsPass(data);
    for (const how of ['range', 'stream'] as const) {
      for (const raw of [false, true]) {
        const l = join(work, `l-${how}-${raw}`);
        mkdirSync(l);
        const native = await nativePass(work, l, data, how, {}, raw);
        expectSamePass(native, js);
        // Headers, PAX records and padding are mostly zeros: the addon records those runs as
        // 'Z' (5 bytes each), which deflate then need not read byte by byte.
        expect(parse(native.records).length).toBeGreaterThan(parse(js.records).length);
        expect(native.records.length).toBeLessThan(js.records.length / 3);
      }
    }
  });

  test('the range path applies exactly the range: the bytes before and after it are neither applied nor hashed', async () => {
    const data = tar(file('inside', 'in range'));
    const p = await nativePass(work, layer, data, 'range');
    expect(p.digest).toBe(sha256(data));
    expect(p.bytes).toBe(data.length);
    expect(readdirSync(layer)).toEqual(['inside']);
    expect(readFileSync(join(layer, 'inside'), 'utf8')).toBe('in range');
    // The junk around the range would be a corrupt archive (and another digest) if it were read.
    const junkFirst = join(work, 'junk');
    mkdirSync(junkFirst);
    const blob = join(work, 'blob2');
    writeFileSync(blob, Buffer.concat([randomBytes(1000), data]));
    const fd = openSync(blob, 'r');
    try {
      const t = new TappedTar({ fd, start: 0, length: data.length + 1000 }, { maxLogicalBytes: NO_CAP, what: 'junk', onRecord: () => undefined }, chunked(data, 512));
      await expect(applyLayer(junkFirst, t)).rejects.toMatchObject({ code: 'ERR_INVALID_ARCHIVE' });
    } finally { closeSync(fd); }
  });

  test('the logical-size cap refuses the entry that passes it before it is written, as SplitRecorder does', async () => {
    const data = tar(file('a', 'x'.repeat(600)), file('b', 'y'.repeat(600)));
    const t = new TappedTar(chunked(data, 700), { maxLogicalBytes: 1000, what: 'layer sha256:test', onRecord: () => undefined }, chunked(data, 700));
    const err = await applyLayer(layer, t).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_INVALID_ARCHIVE', subject: 'b' });
    expect((err as Error).message).toMatch(/layer sha256:test holds more than 1000 bytes.*at b, 600 bytes; maxUncompressedBytes/);
    expect(readdirSync(layer)).toEqual(['a']);
    const rec = new SplitRecorder({ maxLogicalBytes: 1000, what: 'layer sha256:test' });
    expect(() => rec.write(data)).toThrow((err as Error).message);
  });

  test('a consumer other than the native applier gets the fallback (the JS path), and the native pass does not run', async () => {
    const data = tar(file('f', 'js'));
    let iterated = false;
    const fallback = (async function* () { iterated = true; yield data; })();
    const t = new TappedTar(chunked(data, 100), { maxLogicalBytes: NO_CAP, what: 't', onRecord: () => { throw new Error('native records'); } }, fallback);
    await applyLayer(layer, t, { pureJs: true });
    expect([iterated, t.claimed, t.result]).toEqual([true, false, undefined]);
    expect(readFileSync(join(layer, 'f'), 'utf8')).toBe('js');
  });
});

describe.each(['overlay2', 'vfs'])('importImage of plain layers through the range path (%s)', (driverName) => {
  let work: string;
  let fresh: Awaited<ReturnType<typeof freshStore>>;
  let driver: StorageDriver;
  let store: LayerStore;
  beforeEach(async () => {
    work = mkdtempSync(join(tmpdir(), 'cairn-import-pass-src-'));
    fresh = await freshStore(driverName);
    ({ driver, store } = fresh);
  });
  afterEach(async () => {
    await fresh.close();
    rmSync(work, { recursive: true, force: true });
  });

  test.each(['docker-save directory', 'docker-save tarball', 'OCI layout'])('a layer that does not match its diff id (%s) fails the import and leaves no layer', async (kind) => {
    const layers = await sampleLayers();
    const dir = join(work, 'img');
    if (kind === 'OCI layout') await writeOciLayout(dir, layers, 'bad:1');
    else await writeDockerSave(dir, layers, 'bad:1');
    // One byte after the last layer's end marker: it still applies, only its digest is wrong.
    const last = kind === 'OCI layout' ? join(dir, 'blobs/sha256', readdirSync(join(dir, 'blobs/sha256')).find((n) => readFileSync(join(dir, 'blobs/sha256', n)).equals(layers[2]!))!)
      : join(dir, 'layer2/layer.tar');
    appendFileSync(last, Buffer.from([1]));
    let src = dir;
    if (kind === 'docker-save tarball') { src = join(work, 'img.tar'); tarDir(dir, src); }
    await expect(store.importImage(src)).rejects.toMatchObject({ code: 'ERR_INVALID_ARCHIVE', message: expect.stringMatching(/diff id/) });
    expect(store.layers()).toHaveLength(0);
    expect(store.images()).toHaveLength(0);
    const home = await readdir(driver.home).catch(() => []);
    for (const name of home.filter((n) => isValidId(n) && n !== 'l')) expect(await driver.exists(name)).toBe(false);
  });
});
