// The parser's PAX fast path: 'x' bodies are decoded in place when a chunk holds them
// whole and copied when they straddle chunks; times and numbers are parsed by hand; an
// empty value restores the header's value. These pin that behaviour down.
import { CairnError } from '@cairnfs/core';
import { TarParser, encodeHeader, tarTrailer, type TarEntry } from '@cairnfs/archive';

function record(key: string, value: Buffer | string): Buffer {
  const v = typeof value === 'string' ? Buffer.from(value) : value;
  const rest = Buffer.concat([Buffer.from(` ${key}=`), v, Buffer.from('\n')]);
  let len = rest.length + 1;
  while (len !== rest.length + String(len).length) len = rest.length + String(len).length;
  return Buffer.concat([Buffer.from(String(len)), rest]);
}

function reseal(block: Buffer): void {
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += block[i]!;
  block.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
}

function pax(kind: 'x' | 'g', records: Array<[string, Buffer | string]>): Buffer {
  const body = Buffer.concat(records.map(([k, v]) => record(k, v)));
  const h = encodeHeader({ name: 'PaxHeaders/x', type: 'file', mode: 0o644, size: body.length });
  const block = Buffer.from(h.subarray(h.length - 512));
  block[156] = kind.charCodeAt(0);
  reseal(block);
  return Buffer.concat([block, body, Buffer.alloc((512 - (body.length % 512)) % 512)]);
}

function dir(name: string, extra: { uid?: number; mtimeNs?: bigint } = {}): Buffer {
  return encodeHeader({ name, type: 'dir', mode: 0o755, uid: extra.uid ?? 1, gid: 2, mtimeNs: extra.mtimeNs ?? 1_000_000_000n });
}

/**
 * Feeds `tar` through one reused buffer of `size` bytes (overwritten after every write,
 * as a producer recycling its buffer may do), collecting entries.
 */
function parseReusing(tar: Buffer, size: number): TarEntry[] {
  const entries: TarEntry[] = [];
  const parser = new TarParser({ entry: (e) => entries.push(e), data() {}, end() {} });
  const buf = Buffer.alloc(size);
  for (let i = 0; i < tar.length; i += size) {
    const n = tar.copy(buf, 0, i, Math.min(i + size, tar.length));
    parser.write(buf.subarray(0, n));
    buf.fill(0xaa);
  }
  parser.finish();
  return entries;
}

const binary = Buffer.from([0, 0xff, 0x0a, 0x3d, 0x80, 1]);

function sample(): Buffer {
  return Buffer.concat([
    pax('x', [
      ['path', 'dir/ünïcode-' + 'n'.repeat(150)],
      ['mtime', '1700000000.123456789123'],
      ['atime', '1700000001.5'],
      ['uid', '1000001'],
      ['SCHILY.xattr.user.bin', binary],
    ]),
    dir('short-ignored'),
    tarTrailer(),
  ]);
}

describe('PAX headers decoded from the input chunks', () => {
  test.each([1, 7, 100, 512, 700, 1024, 1 << 16])('chunks of %i bytes, buffer reused after each write, give the same entry', (size) => {
    const [e] = parseReusing(sample(), size);
    expect(e!.name).toBe('dir/ünïcode-' + 'n'.repeat(150));
    expect(e!.mtimeNs).toBe(1_700_000_000_123_456_789n);
    expect(e!.atimeNs).toBe(1_700_000_001_500_000_000n);
    expect(e!.uid).toBe(1000001);
    expect(e!.xattrs.get('user.bin')).toEqual(binary);
  });

  test.each([
    ['-1.5', -1_500_000_000n],
    ['0', 0n],
    ['12.', 12_000_000_000n],
    ['123456789012345678', 123456789012345678n * 1_000_000_000n],
    ['5.000000001999', 5_000_000_001n],
  ])('PAX mtime "%s" is %p ns', (text, ns) => {
    const [e] = parseReusing(Buffer.concat([pax('x', [['mtime', text]]), dir('d'), tarTrailer()]), 512);
    expect(e!.mtimeNs).toBe(ns);
  });

  test.each(['.5', '1e3', '1.2.3', '-', '+1', ' 1'])('PAX mtime "%s" is ERR_INVALID_ARCHIVE', (text) => {
    const tar = Buffer.concat([pax('x', [['mtime', text]]), dir('d'), tarTrailer()]);
    expect(() => parseReusing(tar, 512)).toThrow(CairnError);
    expect(() => parseReusing(tar, 512)).toThrow(/mtime is not a time/);
  });

  test.each(['', '-1', '1x', '99999999999999999999'])('PAX uid "%s" is refused, except empty which keeps the header uid', (text) => {
    const tar = Buffer.concat([pax('x', [['uid', text]]), dir('d', { uid: 77 }), tarTrailer()]);
    if (text === '') expect(parseReusing(tar, 512)[0]!.uid).toBe(77);
    else expect(() => parseReusing(tar, 512)).toThrow(/uid=.* is not a number/);
  });

  test('an empty local value restores the header value over a global one; the last record for a key wins', () => {
    const tar = Buffer.concat([
      pax('g', [['uid', '4242'], ['path', 'global-name'], ['mtime', '5']]),
      pax('x', [['uid', ''], ['path', 'first'], ['path', '']]),
      dir('from-header', { uid: 9, mtimeNs: 3_000_000_000n }),
      pax('x', [['mtime', ''], ['path', ''], ['path', 'second']]),
      dir('ignored', { uid: 9, mtimeNs: 3_000_000_000n }),
      dir('third', { uid: 9, mtimeNs: 3_000_000_000n }),
      tarTrailer(),
    ]);
    const [a, b, c] = parseReusing(tar, 1000);
    expect(a).toMatchObject({ name: 'from-header/', uid: 9, mtimeNs: 5_000_000_000n });
    expect(b).toMatchObject({ name: 'second', uid: 4242, mtimeNs: 3_000_000_000n });
    expect(c).toMatchObject({ name: 'global-name', uid: 4242, mtimeNs: 5_000_000_000n });
  });

  test('a global xattr and a local one both reach the entry; a global empty value removes the global', () => {
    const tar = Buffer.concat([
      pax('g', [['SCHILY.xattr.user.g', 'G'], ['uname', 'gu']]),
      pax('x', [['SCHILY.xattr.user.l', '']]),
      dir('a'),
      pax('g', [['SCHILY.xattr.user.g', '']]),
      dir('b'),
      tarTrailer(),
    ]);
    const [a, b] = parseReusing(tar, 7);
    expect([...a!.xattrs.keys()].sort()).toEqual(['user.g', 'user.l']);
    expect(a!.xattrs.get('user.l')).toEqual(Buffer.alloc(0));
    expect(a!.uname).toBe('gu');
    expect(b!.xattrs.size).toBe(0);
    expect(b!.uname).toBe('gu');
  });
});
