// The JS tar parser stays linear in its input and bounded in memory whatever the archive
// says (issue 13, findings 4-6 and 11), with the caps of the addon's reader: each cap is
// fed 10x over and must be refused with ERR_INVALID_ARCHIVE well under a second with
// bounded RSS; hash-mapped keys and the sparse 1.0 map stay linear within the caps. The
// two applyLayer paths end every case the same way. packages/sys/test/reader-limits.test.ts
// holds the addon's reader to the same.
import * as fs from 'node:fs';
import { Readable } from 'node:stream';
import { isCairnError } from '@cairnfs/core';
import { TAR_LIMITS, TarParser, applyLayer, encodeHeader, tarTrailer } from '@cairnfs/archive';
import { tarLimits } from '@cairnfs/sys';
import { removeDir, tempDir } from './helpers.js';

const MiB = 1 << 20;
const BLOCK = 512;

const pad = (n: number) => Buffer.alloc((BLOCK - (n % BLOCK)) % BLOCK);

function reseal(block: Buffer): Buffer {
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += block[i]!;
  block.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return block;
}

/** A header of typeflag `type` declaring `size` bytes. */
function header(name: string, type: string, size: number): Buffer {
  const h = encodeHeader({ name, type: 'file', mode: 0o644, size });
  h[156] = type.charCodeAt(0);
  return reseal(h);
}

const file = (name: string, body = 'x') => Buffer.concat([encodeHeader({ name, type: 'file', mode: 0o644, size: body.length }), Buffer.from(body), pad(body.length)]);
const meta = (type: 'x' | 'g', body: Buffer) => Buffer.concat([header('PaxHeaders/x', type, body.length), body, pad(body.length)]);

function record(key: string, value: string): Buffer {
  const rest = Buffer.from(` ${key}=${value}\n`);
  let len = rest.length + String(rest.length).length;
  if (String(len).length !== String(rest.length).length) len = rest.length + String(len).length;
  return Buffer.concat([Buffer.from(String(len)), rest]);
}

function records(n: number, key: (i: number) => string, value = 'v'): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < n; i++) parts.push(record(key(i), value));
  return Buffer.concat(parts);
}

function* repeat(chunk: Buffer, times: number): Generator<Buffer> {
  for (let i = 0; i < times; i++) yield chunk;
}

interface Outcome {
  code: string;
  message: string;
  ms: number;
  rssMiB: number;
}

/** Parses (no file work) until the first failure, as applyLayer would stop. */
function parse(chunks: Iterable<Buffer>): Outcome {
  const rss = process.memoryUsage.rss();
  const started = performance.now();
  const parser = new TarParser({ entry() {}, data() {}, end() {} });
  let code = 'ok';
  let message = '';
  try {
    for (const c of chunks) {
      parser.write(c);
      if (parser.finished) break;
    }
    parser.finish();
  } catch (err) {
    if (!isCairnError(err)) throw err;
    code = err.code;
    message = err.message;
  }
  return { code, message, ms: performance.now() - started, rssMiB: (process.memoryUsage.rss() - rss) / MiB };
}

/** A PAX 1.0 sparse entry whose data is the map `map` (then no content). */
function sparse10(name: string, realSize: number, map: string): Buffer[] {
  const mapBytes = Buffer.concat([Buffer.from(map), pad(map.length)]);
  const x = meta('x', Buffer.concat([record('GNU.sparse.major', '1'), record('GNU.sparse.minor', '0'),
    record('GNU.sparse.name', name), record('GNU.sparse.realsize', String(realSize))]));
  return [x, header('GNUSparseFile.0/' + name, '0', mapBytes.length), mapBytes];
}

/** A PAX 0.1 sparse entry with one empty segment: `realSize` bytes of holes. */
function holes(name: string, realSize: number): Buffer {
  return Buffer.concat([
    meta('x', Buffer.concat([record('GNU.sparse.major', '0'), record('GNU.sparse.minor', '1'),
      record('GNU.sparse.realsize', String(realSize)), record('GNU.sparse.map', '0,0')])),
    header(name, '0', 0),
  ]);
}

/** Old GNU sparse: an 'S' header and extension blocks of 21 empty segments each, for ever. */
function oldGnuSparse(blocks: number): Buffer[] {
  const h = header('holes', 'S', 0);
  h.write('ustar  \0', 257, 'latin1');
  h.write((1 << 30).toString(8).padStart(11, '0') + '\0', 483, 'latin1');
  h[482] = 1;
  reseal(h);
  const ext = Buffer.alloc(BLOCK);
  for (let i = 0; i < 21; i++) {
    ext.write('00000000000\0', i * 24, 'latin1');
    ext.write('00000000000\0', i * 24 + 12, 'latin1');
  }
  ext[504] = 1;
  const chunk = Buffer.concat(Array.from({ length: 256 }, () => ext));
  return [h, ...repeat(chunk, Math.ceil(blocks / 256))];
}

test('TAR_LIMITS are the addon reader\'s caps', () => {
  expect({ ...TAR_LIMITS }).toEqual({ ...tarLimits });
  expect(TAR_LIMITS).toEqual({ extendedHeader: MiB, localPax: MiB, globalPax: 64 << 10, sparseSegments: 1 << 18, sparseTotal: 2 ** 40 });
});

describe('10x each cap: refused at once, RSS bounded', () => {
  test('an extended header of 10 MiB is refused at its header', () => {
    const r = parse([header('PaxHeaders/big', 'x', 10 * TAR_LIMITS.extendedHeader), ...repeat(Buffer.alloc(MiB, 0x61), 10)]);
    expect(r.code).toBe('ERR_INVALID_ARCHIVE');
    expect(r.message).toMatch(/10485760-byte extended header at byte 0 \(limit 1048576\)/);
    expect(r.ms).toBeLessThan(1000);
  });

  test('x headers back to back, 10 MiB of them, are refused once they pass 1 MiB', () => {
    const body = records(2700, (i) => `c${i}`, 'y'.repeat(14));
    const r = parse([...repeat(meta('x', body), Math.ceil((10 * TAR_LIMITS.localPax) / body.length)), file('f')]);
    expect(r.code).toBe('ERR_INVALID_ARCHIVE');
    expect(r.message).toMatch(/PAX headers before the entry at byte \d+ hold more than 1048576 bytes/);
    expect(r.ms).toBeLessThan(1000);
    expect(r.rssMiB).toBeLessThan(64);
  });

  test('global records in force of 640 KiB (distinct xattr keys) are refused', () => {
    const body = records(Math.ceil((10 * TAR_LIMITS.globalPax) / 32), (i) => `SCHILY.xattr.user.k${String(i).padStart(8, '0')}`);
    const r = parse([meta('g', body), file('f')]);
    expect(r.code).toBe('ERR_INVALID_ARCHIVE');
    expect(r.message).toMatch(/global PAX records in force .* \(limit 65536\)/);
    expect(r.ms).toBeLessThan(1000);
  });

  test('a GNU sparse 1.0 map declaring 10x the entry cap is refused at its first line', () => {
    const n = 10 * TAR_LIMITS.sparseSegments;
    const r = parse(sparse10('holes', 1 << 30, `${n}\n` + '0\n0\n'.repeat(n)));
    expect(r.code).toBe('ERR_INVALID_ARCHIVE');
    expect(r.message).toMatch(/GNU sparse 1.0 map of 2621440 entries \(limit 262144\)/);
    expect(r.ms).toBeLessThan(1000);
  });

  test('old GNU sparse extension blocks holding 10x the entry cap are refused once past it', () => {
    const r = parse(oldGnuSparse(Math.ceil((10 * TAR_LIMITS.sparseSegments) / 21)));
    expect(r.code).toBe('ERR_INVALID_ARCHIVE');
    expect(r.message).toMatch(/GNU sparse map of more than 262144 entries \(limit\)/);
    expect(r.ms).toBeLessThan(1000);
    expect(r.rssMiB).toBeLessThan(64);
  });

  test('sparse files of 10 TiB logical size (10x the archive cap) are refused: one of them, or the 11th of 100 GiB', () => {
    const one = parse([holes('huge', 10 * TAR_LIMITS.sparseTotal), tarTrailer()]);
    expect(one.code).toBe('ERR_INVALID_ARCHIVE');
    expect(one.message).toMatch(/add up to 10995116277760 bytes \(limit 1099511627776 for one archive\)/);
    expect(parse([...Array.from({ length: 11 }, (_, i) => holes(`f${i}`, 100 * 2 ** 30)), tarTrailer()]).code).toBe('ERR_INVALID_ARCHIVE');
    expect(parse([...Array.from({ length: 10 }, (_, i) => holes(`f${i}`, 100 * 2 ** 30)), tarTrailer()]).code).toBe('ok');
  });
});

describe('linear within the caps', () => {
  test('a GNU sparse 1.0 map of 200,000 entries is read in linear time (the map was re-split per block: 68 s for 1 MiB)', () => {
    const r = parse([...sparse10('holes', 1 << 30, '200000\n' + '0\n0\n'.repeat(200_000)), tarTrailer()]);
    expect(r.code).toBe('ok');
    expect(r.ms).toBeLessThan(1000);
  });

  test('a 1 MiB global header of 50,000 distinct keys no entry uses costs nothing per later entry', () => {
    const entries = Buffer.concat(Array.from({ length: 2000 }, (_, i) => file(`f${i}`)));
    const r = parse([meta('g', records(50_000, (i) => `k${i}`)), entries, tarTrailer()]);
    expect(r.code).toBe('ok');
    expect(r.ms).toBeLessThan(1000);
  });
});

test('both applyLayer paths end every limit case with the same code', async () => {
  const work = tempDir('limits');
  try {
    const cases: Array<[string, Buffer]> = [
      ['10 MiB x header', Buffer.concat([header('PaxHeaders/big', 'x', 10 * MiB), Buffer.alloc(10 * MiB)])],
      ['x run over 1 MiB', Buffer.concat([...repeat(meta('x', records(2700, (i) => `c${i}`, 'y'.repeat(14))), 20), file('f'), tarTrailer()])],
      ['globals over 64 KiB', Buffer.concat([meta('g', records(3000, (i) => `SCHILY.xattr.user.k${String(i).padStart(8, '0')}`)), file('f'), tarTrailer()])],
      ['globals nothing uses', Buffer.concat([meta('g', records(50_000, (i) => `k${i}`)), file('f'), tarTrailer()])],
      ['sparse 1.0 over the entry cap', Buffer.concat([...sparse10('holes', 1 << 30, `${(1 << 18) + 1}\n`), tarTrailer()])],
      ['sparse 1.0 at the entry cap', Buffer.concat([...sparse10('holes', 1 << 30, `${1 << 18}\n` + '0\n0\n'.repeat(1 << 18)), tarTrailer()])],
      ['old GNU sparse over the entry cap', Buffer.concat(oldGnuSparse(12_600))],
      ['sparse files over 1 TiB', Buffer.concat([holes('a', 2 ** 39), holes('b', 2 ** 39), holes('c', 1), tarTrailer()])],
      ['sparse files of exactly 1 TiB', Buffer.concat([holes('a', 2 ** 39), holes('b', 2 ** 39), tarTrailer()])],
    ];
    for (const [name, tar] of cases) {
      const codes: string[] = [];
      for (const pureJs of [false, true]) {
        const dir = `${work}/${pureJs ? 'js' : 'native'}`;
        fs.mkdirSync(dir);
        codes.push(await applyLayer(dir, Readable.from([tar]), { pureJs, ownership: false }).then(() => 'ok', (e: unknown) => (isCairnError(e) ? e.code : String(e))));
        removeDir(dir);
      }
      expect([name, codes[0]]).toEqual([name, codes[1]]);
      expect([name, codes[0]]).toEqual([name, /nothing uses|at the entry cap|exactly/.test(name) ? 'ok' : 'ERR_INVALID_ARCHIVE']);
    }
  } finally {
    removeDir(work);
  }
}, 60_000);
