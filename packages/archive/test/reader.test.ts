import * as fs from 'node:fs';
import * as path from 'node:path';
import tarStream from 'tar-stream';
import { lsetxattrSync, mknodSync } from '@cairnfs/sys';
import { CairnError } from '@cairnfs/core';
import { encodeHeader, packEntries, readTar, tarTrailer, type TarEntry } from '@cairnfs/archive';
import { chunked, gnuTar, isRoot, readAll, removeDir, streamToBuffer, tempDir } from './helpers.js';

const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i));

let work: string;
beforeEach(() => { work = tempDir('reader'); });
afterEach(() => removeDir(work));

function byName(entries: Array<{ header: TarEntry; data: Buffer }>): Map<string, { header: TarEntry; data: Buffer }> {
  return new Map(entries.map((e) => [e.header.name.replace(/\/$/, ''), e]));
}

/** A tree with one of every kind GNU tar can archive in all formats. */
function makeTree(root: string, devices: boolean): void {
  fs.mkdirSync(path.join(root, 'd/sub'), { recursive: true });
  fs.writeFileSync(path.join(root, 'd/file'), 'hello world\n');
  fs.chmodSync(path.join(root, 'd/file'), 0o4755);
  fs.writeFileSync(path.join(root, 'd/zero-mode'), 'x');
  fs.chmodSync(path.join(root, 'd/zero-mode'), 0);
  fs.chmodSync(path.join(root, 'd/sub'), 0o1777);
  fs.symlinkSync('../file', path.join(root, 'd/sub/link'));
  fs.linkSync(path.join(root, 'd/file'), path.join(root, 'd/hard'));
  fs.writeFileSync(path.join(root, 'd/big'), Buffer.alloc(70_000, 7));
  if (devices) {
    mknodSync(path.join(root, 'd/fifo'), fs.constants.S_IFIFO | 0o640, 0, 0);
    mknodSync(path.join(root, 'd/null'), fs.constants.S_IFCHR | 0o666, 1, 3);
    mknodSync(path.join(root, 'd/blk'), fs.constants.S_IFBLK | 0o600, 7, 200);
  }
}

describe('readTar on GNU tar archives', () => {
  for (const format of ['gnu', 'pax', 'ustar', 'v7'] as const) {
    test(`--format=${format}: every entry type, mode and content comes back`, async () => {
      const src = path.join(work, 'src');
      fs.mkdirSync(src);
      makeTree(src, isRoot && format !== 'v7'); // v7 has no device or fifo types
      const tar = gnuTar([`--format=${format}`, '-cf', '-', 'd'], src);
      const got = byName(await readAll(tar));
      expect(got.get('d/file')!.header).toMatchObject({ type: 'file', mode: 0o4755, size: 12 });
      expect(got.get('d/file')!.data.toString()).toBe('hello world\n');
      expect(got.get('d/zero-mode')!.header.mode).toBe(0);
      expect(got.get('d/sub')!.header).toMatchObject({ type: 'dir', mode: 0o1777 });
      expect(got.get('d/sub/link')!.header).toMatchObject({ type: 'symlink', linkname: '../file' });
      expect(got.get('d/hard')!.header).toMatchObject({ type: 'hardlink', linkname: 'd/file' });
      expect(got.get('d/big')!.data.equals(Buffer.alloc(70_000, 7))).toBe(true);
      const mtime = BigInt(Math.floor(fs.statSync(path.join(src, 'd/file')).mtimeMs / 1000)) * 1_000_000_000n;
      if (format !== 'pax') expect(got.get('d/file')!.header.mtimeNs).toBe(mtime);
      if (isRoot && format !== 'v7') {
        expect(got.get('d/fifo')!.header).toMatchObject({ type: 'fifo', mode: 0o640 });
        expect(got.get('d/null')!.header).toMatchObject({ type: 'char', devmajor: 1, devminor: 3 });
        expect(got.get('d/blk')!.header).toMatchObject({ type: 'block', devmajor: 7, devminor: 200 });
      }
    });
  }

  test('long names and long link targets (GNU L/K and PAX path/linkpath) are resolved', async () => {
    const long = 'a'.repeat(120) + '/' + 'b'.repeat(150);
    const target = 't'.repeat(180);
    fs.mkdirSync(path.join(work, 'a'.repeat(120)));
    fs.writeFileSync(path.join(work, long), 'deep');
    fs.symlinkSync(target, path.join(work, 'l'));
    for (const format of ['gnu', 'pax']) {
      const got = byName(await readAll(gnuTar([`--format=${format}`, '-cf', '-', 'a'.repeat(120), 'l'], work)));
      expect(got.get(long)!.data.toString()).toBe('deep');
      expect(got.get('l')!.header.linkname).toBe(target);
    }
  });

  test('PAX uid/gid 3000000 and nanosecond mtime from GNU tar', async () => {
    const f = path.join(work, 'f');
    fs.writeFileSync(f, 'x');
    if (isRoot) fs.chownSync(f, 3_000_000, 3_000_001);
    // touch sets exact nanoseconds; fs.utimes takes a double and cannot express all of them.
    const { execFileSync } = await import('node:child_process');
    execFileSync('touch', ['-d', '2023-01-02T03:04:05.123456789Z', f]);
    const got = byName(await readAll(gnuTar(['--format=pax', '-cf', '-', 'f'], work)));
    expect(got.get('f')!.header.mtimeNs).toBe(1672628645_123456789n);
    if (isRoot) expect(got.get('f')!.header).toMatchObject({ uid: 3_000_000, gid: 3_000_001 });
  });

  test('binary xattr values (every byte 0x00..0xff) from GNU tar --xattrs arrive byte for byte', async () => {
    const f = path.join(work, 'f');
    fs.writeFileSync(f, 'x');
    lsetxattrSync(f, 'user.bin', ALL_BYTES);
    lsetxattrSync(f, 'user.text', Buffer.from('hello'));
    const got = byName(await readAll(gnuTar(['--format=pax', '--xattrs', '--xattrs-include=user.*', '-cf', '-', 'f'], work)));
    expect(got.get('f')!.header.xattrs.get('user.bin')).toEqual(ALL_BYTES);
    expect(got.get('f')!.header.xattrs.get('user.text')!.toString()).toBe('hello');
  });

  describe('sparse files', () => {
    const layout: Array<[number, string]> = [[0, 'start'], [1 << 20, 'middle'], [5 << 20, 'later']];
    const realSize = 8 << 20;
    function makeSparse(): Buffer {
      const f = path.join(work, 'sp');
      const fd = fs.openSync(f, 'w');
      for (const [off, text] of layout) fs.writeSync(fd, text, off);
      fs.ftruncateSync(fd, realSize);
      fs.closeSync(fd);
      return fs.readFileSync(f);
    }
    for (const [label, args] of [
      ['old GNU (S)', ['--format=gnu', '--sparse']],
      ['PAX 0.0', ['--format=pax', '--sparse', '--sparse-version=0.0']],
      ['PAX 0.1', ['--format=pax', '--sparse', '--sparse-version=0.1']],
      ['PAX 1.0', ['--format=pax', '--sparse', '--sparse-version=1.0']],
    ] as const) {
      test(`${label}: the map and data rebuild the file exactly`, async () => {
        const expected = makeSparse();
        const tar = gnuTar([...args, '-cf', '-', 'sp'], work);
        expect(tar.length).toBeLessThan(64 * 1024);
        const [entry, ...rest] = await readAll(tar);
        expect(rest).toHaveLength(0);
        expect(entry!.header).toMatchObject({ name: 'sp', type: 'file', size: realSize });
        expect(entry!.header.sparse!.realSize).toBe(realSize);
        const rebuilt = Buffer.alloc(realSize);
        let pos = 0;
        for (const seg of entry!.header.sparse!.segments) {
          entry!.data.copy(rebuilt, seg.offset, pos, pos + seg.length);
          pos += seg.length;
        }
        expect(pos).toBe(entry!.data.length);
        expect(rebuilt.equals(expected)).toBe(true);
      });
    }
  });
});

describe('readTar on archives from tar-stream and by hand', () => {
  test('tar-stream archive with long names, hardlinks and a 0/0 char device', async () => {
    const pack = tarStream.pack();
    const long = 'x/'.repeat(80) + 'file';
    pack.entry({ name: long, mode: 0o640 }, 'data');
    pack.entry({ name: 'hl', type: 'link', linkname: long });
    pack.entry({ name: 'wh', type: 'character-device', devmajor: 0, devminor: 0, mode: 0 });
    pack.finalize();
    const got = byName(await readAll(await streamToBuffer(pack as unknown as AsyncIterable<Uint8Array>)));
    expect(got.get(long)!.data.toString()).toBe('data');
    expect(got.get('hl')!.header).toMatchObject({ type: 'hardlink', linkname: long });
    expect(got.get('wh')!.header).toMatchObject({ type: 'char', devmajor: 0, devminor: 0 });
  });

  test('base-256 uid/gid/size fields and negative mtime decode', async () => {
    const header = encodeHeader({ name: 'f', type: 'file', mode: 0o644, uid: 3_000_000, gid: 5_000_000, mtimeNs: -5_000_000_000n, size: 3 });
    // Strip the PAX header so only the base-256 / octal fields remain.
    const main = header.subarray(header.length - 512);
    main.writeUInt8(0xff, 136); // make mtime base-256 negative: all 0xff = -1
    main.fill(0xff, 136, 148);
    reseal(main);
    const tar = Buffer.concat([main, Buffer.from('abc'), Buffer.alloc(509), tarTrailer()]);
    const [e] = await readAll(tar);
    expect(e!.header).toMatchObject({ uid: 3_000_000, gid: 5_000_000 });
    expect(e!.header.mtimeNs).toBe(-1_000_000_000n);
    expect(e!.data.toString()).toBe('abc');
  });

  test('global PAX headers apply to later entries; local records override them', async () => {
    const g = paxBlock('g', [['uid', '4242'], ['SCHILY.xattr.user.all', 'G']]);
    const x = paxBlock('x', [['uid', '7'], ['LIBARCHIVE.xattr.user.b%20x', Buffer.from([0, 1, 2]).toString('base64')]]);
    const tar = Buffer.concat([
      g, encodeHeader({ name: 'a', type: 'dir', mode: 0o755 }),
      x, encodeHeader({ name: 'b', type: 'dir', mode: 0o755 }),
      tarTrailer(),
    ]);
    const got = byName(await readAll(tar));
    expect(got.get('a')!.header.uid).toBe(4242);
    expect(got.get('b')!.header.uid).toBe(7);
    expect(got.get('b')!.header.xattrs.get('user.all')!.toString()).toBe('G');
    expect(got.get('b')!.header.xattrs.get('user.b x')).toEqual(Buffer.from([0, 1, 2]));
  });

  test('a corrupted checksum is ERR_INVALID_ARCHIVE naming the offset', async () => {
    const tar = Buffer.concat([encodeHeader({ name: 'ok', type: 'dir', mode: 0o755 }), encodeHeader({ name: 'bad', type: 'dir', mode: 0o755 }), tarTrailer()]);
    tar[512 + 10] ^= 1;
    await expect(readAll(tar)).rejects.toMatchObject({ code: 'ERR_INVALID_ARCHIVE', message: expect.stringContaining('byte 512') });
  });

  test('input ending inside file data is ERR_INVALID_ARCHIVE naming the entry', async () => {
    const tar = Buffer.concat([encodeHeader({ name: 'cut', type: 'file', mode: 0o644, size: 10_000 }), Buffer.alloc(3000)]);
    const err = await readAll(tar).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CairnError);
    expect(err).toMatchObject({ code: 'ERR_INVALID_ARCHIVE', subject: 'cut' });
  });

  test('an empty stream is an empty archive; a lone zero block at EOF ends it', async () => {
    expect(await readAll(Buffer.alloc(0))).toEqual([]);
    const one = Buffer.concat([encodeHeader({ name: 'a', type: 'dir', mode: 0o755 }), Buffer.alloc(512)]);
    expect((await readAll(one)).map((e) => e.header.name)).toEqual(['a/']);
  });

  test('bodies left unread are skipped, and input after the trailer is drained', async () => {
    const tar = Buffer.concat([
      encodeHeader({ name: 'f1', type: 'file', mode: 0o644, size: 1000 }), Buffer.alloc(1024, 1),
      encodeHeader({ name: 'f2', type: 'file', mode: 0o644, size: 1 }), Buffer.from('z'), Buffer.alloc(511),
      tarTrailer(), Buffer.alloc(4096, 9),
    ]);
    const names: string[] = [];
    const source = chunked(tar, 333);
    for await (const { header, body } of readTar(source)) {
      names.push(header.name);
      if (header.name === 'f2') expect((await streamToBuffer(body)).toString()).toBe('z');
    }
    expect(names).toEqual(['f1', 'f2']);
    expect(source.readableEnded).toBe(true);
  });
  test('breaking out of the iteration releases (destroys) the input stream', async () => {
    const tar = Buffer.concat([
      encodeHeader({ name: 'a', type: 'dir', mode: 0o755 }), encodeHeader({ name: 'b', type: 'dir', mode: 0o755 }), tarTrailer(),
    ]);
    const source = chunked(tar, 512);
    for await (const { header } of readTar(source)) {
      expect(header.name).toBe('a/');
      break;
    }
    expect(source.destroyed).toBe(true);
  });
});

describe('TarWriter round trips', () => {
  test('uid/gid 3000000, ns mtime, mode 0, setuid/sticky, binary xattrs and long links survive writer → reader', async () => {
    const xattrs = new Map([['security.capability', ALL_BYTES], ['user.empty', Buffer.alloc(0)]]);
    const entries = [
      { header: { name: 'f', type: 'file' as const, mode: 0o4755, uid: 3_000_000, gid: 3_000_001, mtimeNs: 1700000000_000000001n, size: 5, xattrs }, body: Buffer.from('hello') },
      { header: { name: 'z', type: 'file' as const, mode: 0, size: 0, mtimeNs: -1_500_000_000n } },
      { header: { name: 'sticky', type: 'dir' as const, mode: 0o1777 } },
      { header: { name: 'l', type: 'symlink' as const, mode: 0o777, linkname: 'q'.repeat(300) } },
    ];
    const got = byName(await readAll(await streamToBuffer(packEntries(entries))));
    expect(got.get('f')!.header).toMatchObject({ mode: 0o4755, uid: 3_000_000, gid: 3_000_001, mtimeNs: 1700000000_000000001n, size: 5 });
    expect(got.get('f')!.header.xattrs).toEqual(xattrs);
    expect(got.get('f')!.data.toString()).toBe('hello');
    expect(got.get('z')!.header).toMatchObject({ mode: 0, mtimeNs: -1_500_000_000n });
    expect(got.get('sticky')!.header).toMatchObject({ type: 'dir', mode: 0o1777 });
    expect(got.get('l')!.header.linkname).toBe('q'.repeat(300));
  });

  test('GNU tar lists our PAX output with the same ids, times and names', async () => {
    const tar = await streamToBuffer(packEntries([
      { header: { name: 'n'.repeat(150), type: 'file', mode: 0o600, uid: 3_000_000, gid: 12, mtimeNs: 1700000000_250000000n, size: 2 }, body: Buffer.from('ok') },
    ]));
    fs.writeFileSync(path.join(work, 'o.tar'), tar);
    const listing = gnuTar(['--numeric-owner', '--full-time', '-tvf', 'o.tar'], work).toString();
    expect(listing).toContain('3000000/12');
    expect(listing).toContain('n'.repeat(150));
    expect(listing).toMatch(/2023-11-14 22:13:20\.25/);
  });

  test('a body shorter than its declared size fails the stream', async () => {
    const stream = packEntries([{ header: { name: 'f', type: 'file', mode: 0o644, size: 10 }, body: Buffer.from('short') }]);
    await expect(streamToBuffer(stream)).rejects.toMatchObject({ code: 'ERR_INVALID_ARCHIVE' });
  });

  test('packing is deterministic', async () => {
    const make = () => packEntries([{ header: { name: 'a', type: 'file', mode: 0o644, size: 1, mtimeNs: 5n }, body: Buffer.from('a') }]);
    expect((await streamToBuffer(make())).equals(await streamToBuffer(make()))).toBe(true);
  });
});

function reseal(block: Buffer): void {
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += block[i]!;
  block.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
}

function paxBlock(kind: 'x' | 'g', records: Array<[string, string]>): Buffer {
  const body = Buffer.concat(records.map(([k, v]) => {
    const rest = ` ${k}=${v}\n`;
    let len = Buffer.byteLength(rest) + 1;
    len = Buffer.byteLength(rest) + String(len).length;
    return Buffer.from(`${len}${rest}`);
  }));
  const h = encodeHeader({ name: 'pax', type: 'file', mode: 0o644, size: body.length });
  h[156] = kind.charCodeAt(0);
  reseal(h);
  return Buffer.concat([h, body, Buffer.alloc((512 - (body.length % 512)) % 512)]);
}

