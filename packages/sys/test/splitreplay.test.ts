// The byte-exact export in the addon (native/split_replay.cc) on its own: records written
// here by hand in image's tar-split format, files in a scratch layer. (image's tarsplit,
// store and hostile-export suites run it through the layer store.)
import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, openSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { openSplitReplay } from '@cairnfs/sys';
import { drainReplay, scratch, type Scratch } from './helpers.js';
import { raw, seg, size, u32, zeros } from './splitrecords.js';

let s: Scratch;
beforeEach(async () => { s = await scratch(); });
afterEach(async () => { await s.cleanup(); });

/** Replays `records` (gzipped here, in `members` gzip members) over `root` into `chunk`-byte buffers. */
async function replay(root: string, records: Buffer[], opts: { chunk?: number; members?: number; gz?: Buffer; expectedBytes?: number } = {}) {
  const all = Buffer.concat(records);
  const members = opts.members ?? 1;
  const step = Math.ceil(all.length / members);
  const gz = opts.gz ?? Buffer.concat(Array.from({ length: members }, (_, i) => gzipSync(all.subarray(i * step, (i + 1) * step))));
  const splitPath = join(s.dir, `split-${Math.random()}.gz`);
  writeFileSync(splitPath, gz);
  const rootFd = openSync(root, 'r');
  const splitFd = openSync(splitPath, 'r');
  const r = openSplitReplay(rootFd, splitFd, opts.expectedBytes);
  const out: Buffer[] = [];
  try {
    await drainReplay(r, out, opts.chunk ?? 1 << 20);
    return { data: Buffer.concat(out), state: r.digest() };
  } catch (err) {
    return { data: Buffer.concat(out), err: err as { cairnCode?: string; message: string } };
  } finally {
    r.close();
    closeSync(rootFd);
    closeSync(splitFd);
  }
}

function layer(): { root: string; records: Buffer[]; tar: Buffer } {
  const root = join(s.dir, 'layer');
  mkdirSync(join(root, 'etc'), { recursive: true });
  const big = Buffer.alloc(3 << 20);
  for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
  writeFileSync(join(root, 'etc/big'), big);
  writeFileSync(join(root, 'etc/small'), 'hello');
  const h1 = Buffer.alloc(512, 1);
  const h2 = Buffer.alloc(512, 2);
  const records = [raw(h1), size('etc/big', big.length), seg('etc/big', 0, 1 << 20), seg('etc/big', 1 << 20, big.length - (1 << 20)),
    raw(h2), size('./etc//small', 5), seg('./etc//small', 0, 5), raw(Buffer.alloc(1024 + 507))];
  const tar = Buffer.concat([h1, big, h2, Buffer.from('hello'), Buffer.alloc(1024 + 507)]);
  return { root, records, tar };
}

test('rebuilds the bytes the records describe, whatever the buffer size and gzip members, with their sha256', async () => {
  const { root, records, tar } = layer();
  for (const [chunk, members] of [[1 << 20, 1], [4096, 3], [1000, 1], [513, 2]] as const) {
    const got = await replay(root, records, { chunk, members });
    expect(got.err).toBeUndefined();
    expect(got.data.equals(tar)).toBe(true);
    expect(got.state).toEqual({ done: true, bytes: tar.length, digest: createHash('sha256').update(tar).digest('hex') });
  }
});

test("'Z' records stand for runs of zero bytes between raw ones, up to 1 MiB each; a longer run is a corrupt split", async () => {
  const { root, records, tar } = layer();
  // The same tar with its trailing zeros (1,531 bytes) as a 'Z', and 1 MiB + 3 more zeros after it in two 'Z's.
  const zeroed = [...records.slice(0, -1), zeros(1024 + 507), raw(Buffer.from([7])), zeros(1 << 20), zeros(3)];
  const expected = Buffer.concat([tar, Buffer.from([7]), Buffer.alloc((1 << 20) + 3)]);
  for (const [chunk, members] of [[1 << 20, 1], [4096, 3], [513, 2]] as const) {
    const got = await replay(root, zeroed, { chunk, members });
    expect(got.err).toBeUndefined();
    expect(got.data.equals(expected)).toBe(true);
    expect(got.state?.digest).toBe(createHash('sha256').update(expected).digest('hex'));
  }
  const tooLong = await replay(root, [...records, zeros((1 << 20) + 1)]);
  expect(tooLong.err?.cairnCode).toBe('ERR_INVALID_ARCHIVE');
  expect(tooLong.err?.message).toMatch(/corrupt \(a run of 1048577 zero bytes\)/);
  expect(tooLong.data.length).toBe(0);
});

test('with the size recorded at import, a split that rebuilds more or fewer bytes is ERR_INVALID_ARCHIVE before the first byte', async () => {
  const { root, records, tar } = layer();
  const exact = await replay(root, records, { expectedBytes: tar.length, chunk: 4096 });
  expect(exact.err).toBeUndefined();
  expect(exact.data.equals(tar)).toBe(true);
  // More is refused as soon as the records pass the recorded size; fewer once they end.
  for (const [what, recs, message] of [
    ['one zero byte more', [...records, zeros(1)], `rebuilds more than the ${tar.length} bytes recorded at import`],
    ['a padding block less', records.slice(0, -1), `rebuilds ${tar.length - 1531} bytes, not the ${tar.length} recorded at import`],
  ] as const) {
    const got = await replay(root, [...recs], { expectedBytes: tar.length });
    expect([what, got.err?.cairnCode]).toEqual([what, 'ERR_INVALID_ARCHIVE']);
    expect(got.err?.message).toContain(message);
    expect(got.data.length).toBe(0);
  }
  // 64 MiB of zeros claimed on top of a 1-byte layer: refused before any is written.
  const flood = await replay(root, [raw(Buffer.from('x')), ...Array.from({ length: 64 }, () => zeros(1 << 20))], { expectedBytes: 1 });
  expect(flood.err?.message).toMatch(/rebuilds more than the 1 bytes recorded/);
  expect(flood.data.length).toBe(0);
});

test('a recorded file that is now a symlink is ERR_UNSAFE_ARCHIVE before the first byte, and its target is not read', async () => {
  const { root, records } = layer();
  writeFileSync(join(s.dir, 'secret'), 'host secret');
  const { rmSync } = await import('node:fs');
  rmSync(join(root, 'etc/small'));
  symlinkSync(join(s.dir, 'secret'), join(root, 'etc/small'));
  const got = await replay(root, records);
  expect(got.err?.cairnCode).toBe('ERR_UNSAFE_ARCHIVE');
  expect(got.err?.message).toMatch(/etc\/\/small is a symlink/);
  expect(got.data.length).toBe(0);
});

test('a file of another size than recorded, a missing one and a fifo are refused before any output', async () => {
  const { root, records } = layer();
  writeFileSync(join(root, 'etc/small'), 'hello, longer now');
  let got = await replay(root, records);
  expect(got.err).toMatchObject({ cairnCode: 'ERR_INVALID_ARCHIVE', message: expect.stringMatching(/changed size \(17 bytes, 5 at import\)/) });
  expect(got.data.length).toBe(0);
  const { rmSync } = await import('node:fs');
  rmSync(join(root, 'etc/small'));
  got = await replay(root, records);
  expect(got.err).toMatchObject({ cairnCode: 'ERR_INVALID_ARCHIVE', message: expect.stringMatching(/is missing/) });
  const { execFileSync } = await import('node:child_process');
  execFileSync('mkfifo', [join(root, 'etc/small')]);
  got = await replay(root, records);
  expect(got.err).toMatchObject({ cairnCode: 'ERR_UNSAFE_ARCHIVE', message: expect.stringMatching(/is a fifo/) });
});

test('a path with .. is resolved inside the layer; a corrupt, cut or unknown record is ERR_INVALID_ARCHIVE', async () => {
  const { root, records } = layer();
  // '..' is resolved lexically first (as posix.normalize), so it stays inside: /etc/passwd
  // of the layer, which does not exist.
  let got = await replay(root, [size('../../../../etc/passwd', 5), seg('../../../../etc/passwd', 0, 5)]);
  expect(got.err?.cairnCode).toBe('ERR_INVALID_ARCHIVE');
  const gz = gzipSync(Buffer.concat(records));
  got = await replay(root, records, { gz: gz.subarray(0, gz.length - 12) });
  expect(got.err).toMatchObject({ cairnCode: 'ERR_INVALID_ARCHIVE', message: expect.stringMatching(/tar-split record of this layer is corrupt/) });
  got = await replay(root, [raw(Buffer.alloc(10)), Buffer.from('X\0\0\0\x01a')]);
  expect(got.err).toMatchObject({ cairnCode: 'ERR_INVALID_ARCHIVE', message: expect.stringMatching(/record kind 88/) });
  got = await replay(root, [Buffer.concat([Buffer.from('R'), u32(100), Buffer.alloc(10)])]);
  expect(got.err).toMatchObject({ cairnCode: 'ERR_INVALID_ARCHIVE', message: expect.stringMatching(/ends inside a record/) });
  got = await replay(root, [size('etc/small', 5), seg('etc/small', 0, 9)]);
  expect(got.err).toMatchObject({ cairnCode: 'ERR_INVALID_ARCHIVE', message: expect.stringMatching(/lies past its size/) });
});

test('a recorded file whose directory is now a symlink to a host directory (same names, same sizes) is ERR_UNSAFE_ARCHIVE before the first byte', async () => {
  const { root, records } = layer();
  const host = join(s.dir, 'host-etc');
  mkdirSync(host);
  writeFileSync(join(host, 'big'), Buffer.alloc(3 << 20, 0x48));
  writeFileSync(join(host, 'small'), 'HOSTS');
  const { renameSync } = await import('node:fs');
  renameSync(join(root, 'etc'), join(s.dir, 'old-etc'));
  symlinkSync(host, join(root, 'etc'));
  const got = await replay(root, records);
  expect(got.err).toMatchObject({ cairnCode: 'ERR_UNSAFE_ARCHIVE', message: expect.stringMatching(/etc\/big is a symlink \(or reached through one\)/) });
  expect(got.data.length).toBe(0);
});

test.each([
  ['a symlink to a host file of the same size', 'ERR_UNSAFE_ARCHIVE', /etc\/\/small is a symlink/],
  ['a fifo (the fill does not block on it)', 'ERR_UNSAFE_ARCHIVE', /etc\/\/small is a fifo/],
  ['a file of another size', 'ERR_INVALID_ARCHIVE', /changed size \(6 bytes, 5 at import\)/],
])('a file checked before the first byte and replaced by %s before it is read: refused when opened, nothing of it read', async (what, code, message) => {
  const { root, records } = layer();
  writeFileSync(join(s.dir, 'secret'), 'HOSTS');
  const splitPath = join(s.dir, 'split.gz');
  writeFileSync(splitPath, gzipSync(Buffer.concat(records)));
  const rootFd = openSync(root, 'r');
  const splitFd = openSync(splitPath, 'r');
  const r = openSplitReplay(rootFd, splitFd);
  const out: Buffer[] = [];
  let failure: { cairnCode?: string; message: string } | undefined;
  try {
    // The first fill checks every file, then writes the first header and the start of etc/big.
    const first = Buffer.alloc(4096);
    out.push(first.subarray(0, await r.fill(first)));
    const { rmSync } = await import('node:fs');
    const small = join(root, 'etc/small');
    rmSync(small);
    if (what.startsWith('a symlink')) symlinkSync(join(s.dir, 'secret'), small);
    else if (what.startsWith('a fifo')) (await import('node:child_process')).execFileSync('mkfifo', [small]);
    else writeFileSync(small, 'HOSTS!');
    await drainReplay(r, out, 1 << 20);
  } catch (err) {
    failure = err as { cairnCode?: string; message: string };
  } finally {
    r.close();
    closeSync(rootFd);
    closeSync(splitFd);
  }
  expect(failure).toMatchObject({ cairnCode: code, message: expect.stringMatching(message) });
  expect(Buffer.concat(out).includes('HOSTS')).toBe(false);
  expect(Buffer.concat(out).length).toBeGreaterThan(512);
});

/** Opens a replay of `records` (one gzip member) over `root`; the split file's path comes with it. */
function openReplay(root: string, records: Buffer[]) {
  const splitPath = join(s.dir, `split-${Math.random()}.gz`);
  writeFileSync(splitPath, gzipSync(Buffer.concat(records)));
  const fds = [openSync(root, 'r'), openSync(splitPath, 'r')];
  const r = openSplitReplay(fds[0]!, fds[1]!);
  return { r, splitPath, close: () => { r.close(); for (const fd of fds) closeSync(fd); } };
}

test('verify() makes the first fill\'s check ahead of it: a symlinked file rejects it with nothing written, and on a sound layer the fills after it write the same bytes', async () => {
  const { root, records, tar } = layer();
  const sound = openReplay(root, records);
  try {
    await sound.r.verify();
    const out: Buffer[] = [];
    await drainReplay(sound.r, out, 4096);
    expect(Buffer.concat(out).equals(tar)).toBe(true);
    expect(sound.r.digest().digest).toBe(createHash('sha256').update(tar).digest('hex'));
  } finally {
    sound.close();
  }
  const { rmSync } = await import('node:fs');
  rmSync(join(root, 'etc/small'));
  symlinkSync(join(s.dir, 'elsewhere'), join(root, 'etc/small'));
  const bad = openReplay(root, records);
  try {
    await expect(bad.r.verify()).rejects.toMatchObject({ cairnCode: 'ERR_UNSAFE_ARCHIVE', message: expect.stringMatching(/etc\/\/small is a symlink/) });
    await expect(bad.r.fill(Buffer.alloc(4096))).rejects.toMatchObject({ cairnCode: 'ERR_UNSAFE_ARCHIVE' });
    expect(bad.r.digest().bytes).toBe(0);
  } finally {
    bad.close();
  }
});

/** verify(), then (with `rewrite`) the split file overwritten, then every fill: what they wrote. */
async function verifiedThenFilled(root: string, records: Buffer[], rewrite?: Buffer): Promise<Buffer> {
  const replay = openReplay(root, records);
  try {
    await replay.r.verify();
    if (rewrite) writeFileSync(replay.splitPath, gzipSync(rewrite));
    const out: Buffer[] = [];
    await drainReplay(replay.r, out, 1 << 20);
    return Buffer.concat(out);
  } finally {
    replay.close();
  }
}

test('the fills rebuild the records the check read: a split file rewritten after verify() changes nothing up to 8 MiB of records; a larger split is read again (memory stays bounded)', async () => {
  const { root, records, tar } = layer();
  const other = Buffer.from('R\0\0\0\x05other');
  expect((await verifiedThenFilled(root, records, other)).equals(tar)).toBe(true);
  // 9 MiB of raw records (in 1 MiB records) after the tar: past what the check keeps.
  const tail = Buffer.alloc(9 << 20);
  for (let i = 0; i < tail.length; i++) tail[i] = (i * 131 + (i >> 9)) & 0xff;
  const bigRecords = [...records, ...Array.from({ length: 9 }, (_, i) => raw(tail.subarray(i << 20, (i + 1) << 20)))];
  expect((await verifiedThenFilled(root, bigRecords)).equals(Buffer.concat([tar, tail]))).toBe(true);
  expect((await verifiedThenFilled(root, bigRecords, other)).toString()).toBe('other');
});

test('fill(buf, lagHash): the same bytes and digest at every buffer size; each fill has hashed the fill before it, and without lagHash its own bytes, so the caller may then overwrite that buffer', async () => {
  const { root, records, tar } = layer();
  const digest = createHash('sha256').update(tar).digest('hex');
  for (const lag of [true, false]) {
    for (const chunk of [1 << 20, 65536, 4096 + 7]) {
      const replay = openReplay(root, records);
      try {
        const out: Buffer[] = [];
        // Two buffers taking turns, as writeExportTo's do.
        const buffers = [Buffer.alloc(chunk), Buffer.alloc(chunk)];
        for (let turn = 0; ; turn ^= 1) {
          const buf = buffers[turn]!;
          const n = await replay.r.fill(buf, lag);
          if (n === 0) break;
          out.push(Buffer.from(buf.subarray(0, n)));
          (lag ? buffers[turn ^ 1]! : buf).fill(0xee);
        }
        expect(Buffer.concat(out).equals(tar)).toBe(true);
        expect(replay.r.digest()).toEqual({ done: true, bytes: tar.length, digest });
      } finally {
        replay.close();
      }
    }
  }
});
