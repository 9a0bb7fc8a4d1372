// The LayerApplier handle itself (its rules are held to archive's by packages/archive/test:
// the hostile catalogue, the archive suites and the differential fuzzer run through it).
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { openLayerApplier, type LayerApplierOptions } from '@cairnfs/sys';
import { scratch, type Scratch } from './helpers.js';
import { header as tarHeader, trailer } from './tarbuild.js';

let s: Scratch;
beforeEach(async () => { s = await scratch(); });
afterEach(async () => { await s.cleanup(); });

const OPTS: LayerApplierOptions = { whiteouts: 'delete', noDevices: false, ownership: false, euid: 0, egid: 0, umask: 0o022 };

/** A ustar header for a regular file (checksum filled in). */
function header(name: string, size: number): Buffer {
  const b = Buffer.alloc(512);
  b.write(name, 0);
  b.write('0000644\0', 100);
  b.write('0000000\0', 108);
  b.write('0000000\0', 116);
  b.write(size.toString(8).padStart(11, '0') + '\0', 124);
  b.write('14000000000\0', 136);
  b.write('        ', 148);
  b[156] = 0x30;
  b.write('ustar\0' + '00', 257);
  let sum = 0;
  for (const byte of b) sum += byte;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
  return b;
}

function fileEntry(name: string, body: string): Buffer {
  const data = Buffer.alloc(Math.ceil(body.length / 512) * 512);
  data.write(body);
  return Buffer.concat([header(name, body.length), data]);
}

test('bytes split at every offset across writes give the same file; finish returns the content bytes; the header mtime is kept', () => {
  const tar = Buffer.concat([fileEntry('a/hello', 'hello world'), fileEntry('b', 'x'.repeat(700)), Buffer.alloc(1024)]);
  for (const cut of [1, 100, 511, 512, 513, 1023, 1100, tar.length - 1]) {
    const dir = join(s.dir, `cut${cut}`);
    mkdirSync(dir);
    const a = openLayerApplier(dir, OPTS);
    a.write(tar.subarray(0, cut));
    a.write([tar.subarray(cut, cut + 7), tar.subarray(cut + 7)]);
    expect(a.finished).toBe(true);
    expect(a.finish()).toBe(11 + 700);
    a.close();
    expect(readFileSync(join(dir, 'a', 'hello'), 'utf8')).toBe('hello world');
    expect(statSync(join(dir, 'b')).size).toBe(700);
    expect(statSync(join(dir, 'b')).mtimeMs).toBe(0o14000000000 * 1000);
  }
});

test('a second writeAsync before the first settles is refused, and a closed handle refuses writes', async () => {
  const dir = join(s.dir, 'busy');
  mkdirSync(dir);
  const a = openLayerApplier(dir, OPTS);
  const first = a.writeAsync(fileEntry('f', 'data'));
  expect(() => a.write(fileEntry('g', 'data'))).toThrow(/busy/);
  await first;
  a.write(Buffer.alloc(1024));
  expect(a.finish()).toBe(4);
  a.close();
  expect(() => a.write(Buffer.alloc(512))).toThrow(/closed/);
  expect(existsSync(join(dir, 'f'))).toBe(true);
});

test('a failure in the middle of a file leaves no partial file after abort, and names the entry', () => {
  const dir = join(s.dir, 'abort');
  mkdirSync(dir);
  const a = openLayerApplier(dir, OPTS);
  const entry = fileEntry('half', 'y'.repeat(2000));
  a.write(entry.subarray(0, 1000)); // header and part of the content: the file exists now
  expect(existsSync(join(dir, 'half'))).toBe(true);
  let err: unknown;
  try { a.finish(); } catch (e) { err = e; }
  expect(err).toMatchObject({ cairnCode: 'ERR_INVALID_ARCHIVE', subject: 'half' });
  a.abort();
  a.close();
  expect(existsSync(join(dir, 'half'))).toBe(false);
});

test('an archive replacing 40,000 directories by files applies in linear time (every removal used to scan every known directory: 66 s)', () => {
  const n = 40_000;
  const dir = join(s.dir, 'many');
  mkdirSync(dir);
  const blocks: Buffer[] = [];
  for (let i = 0; i < n; i++) blocks.push(tarHeader(`d${i}`, { type: '5', mode: 0o755 }));
  for (let i = 0; i < n; i++) blocks.push(tarHeader(`d${i}`, { type: '0' }));
  blocks.push(trailer());
  const a = openLayerApplier(dir, OPTS);
  // CPU time of this process (the apply runs on this thread), not wall time: under the
  // sanitizers at a load of 6 the wall time was 13 s, while the quadratic code took 66 s.
  const started = process.cpuUsage();
  try {
    a.write(Buffer.concat(blocks));
    a.finish();
  } finally {
    a.close();
  }
  const used = process.cpuUsage(started);
  expect((used.user + used.system) / 1000).toBeLessThan(10_000);
  expect(statSync(join(dir, `d${n - 1}`)).isFile()).toBe(true);
}, 60_000);
