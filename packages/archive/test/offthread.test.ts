// applyLayer's native path runs its parse and file work on libuv's thread pool by default
// (apply-native.ts). These tests hold it to the calling-thread and pure-JS applies: same
// tree, same errors (code, subject), the event loop free meanwhile, the caller's own
// stream error kept, several applies at once.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { isMainThread } from 'node:worker_threads';
import { CairnError } from '@cairnfs/core';
import { applyLayer, encodeHeader, tarTrailer } from '@cairnfs/archive';
import { expectSameTree, repoRoot, snapshotTree } from '@cairnfs/testkit';
import { removeDir, tempDir } from './helpers.js';

const block = (n: number) => Buffer.alloc(Math.ceil(n / 512) * 512);
function entry(h: Parameters<typeof encodeHeader>[0], body?: Buffer): Buffer {
  const parts = [encodeHeader(h)];
  if (body && body.length) {
    const padded = block(body.length);
    body.copy(padded);
    parts.push(padded);
  }
  return Buffer.concat(parts);
}

/** A layer with files of many sizes, dirs, a symlink, a hardlink, an xattr-free whiteout, big file. */
function sampleTar(seed: number): Buffer {
  const parts: Buffer[] = [entry({ name: 'etc', type: 'dir', mode: 0o755 })];
  for (let i = 0; i < 300; i++) {
    const body = Buffer.alloc((i * 977 + seed) % 20_000, (i + seed) & 0xff);
    parts.push(entry({ name: `etc/f${i}`, type: 'file', mode: 0o640, size: body.length, uid: i % 7, gid: i % 5, mtimeNs: 1_700_000_000_000_000_000n + BigInt(i) }, body));
  }
  const big = Buffer.alloc(3 << 20, seed);
  parts.push(entry({ name: 'big', type: 'file', mode: 0o600, size: big.length }, big));
  parts.push(entry({ name: 'etc/link', type: 'symlink', mode: 0o777, linkname: 'f1' }));
  parts.push(entry({ name: 'etc/hard', type: 'hardlink', mode: 0o640, linkname: 'etc/f2' }));
  parts.push(entry({ name: 'etc/.wh.f3', type: 'file', mode: 0o644, size: 0 }));
  parts.push(tarTrailer());
  return Buffer.concat(parts);
}

/** The tar in 16 KiB pieces, as a decompressor would hand it over. */
const pieces = (tar: Buffer) => Readable.from((function* () { for (let i = 0; i < tar.length; i += 16384) yield tar.subarray(i, i + 16384); })());

describe('applyLayer off the JS thread (native, libuv pool)', () => {
  let base: string;
  beforeEach(() => { base = tempDir('thread'); });
  afterEach(() => removeDir(base));
  const dir = (name: string) => { const d = path.join(base, name); fs.mkdirSync(d); return d; };

  /** Applies while a 2 ms interval runs; the longest the event loop went without a tick. */
  async function timedApply(target: string, tar: Buffer, opts: Parameters<typeof applyLayer>[2]): Promise<{ ms: number; maxGap: number; bytes: number }> {
    let last = performance.now();
    let maxGap = 0;
    const timer = setInterval(() => { const now = performance.now(); maxGap = Math.max(maxGap, now - last); last = now; }, 2);
    const t0 = performance.now();
    try {
      const bytes = await applyLayer(target, Readable.from([tar]), opts);
      const ms = performance.now() - t0;
      maxGap = Math.max(maxGap, performance.now() - last);
      return { ms, maxGap, bytes };
    } finally {
      clearInterval(timer);
    }
  }

  test('by default the apply leaves the event loop free (timers keep firing) and writes the same tree as the calling-thread and pure-JS applies', async () => {
    expect(isMainThread).toBe(true);
    // 3,000 small files in one chunk: one pool job, long enough to see the loop blocked on-thread.
    const parts: Buffer[] = [entry({ name: 'd', type: 'dir', mode: 0o755 })];
    for (let i = 0; i < 3000; i++) parts.push(entry({ name: `d/f${i}`, type: 'file', mode: 0o644, size: 5 }, Buffer.from(`f${i}`.padEnd(5))));
    parts.push(tarTrailer());
    const many = Buffer.concat(parts);
    const off = await timedApply(dir('off'), many, {});
    const on = await timedApply(dir('on'), many, { offThread: false });
    expect(on.maxGap).toBeGreaterThan(on.ms / 2); // blocked for (most of) the apply
    expect(off.maxGap).toBeLessThan(off.ms / 2);
    expect(off.bytes).toBe(on.bytes);
    expectSameTree(await snapshotTree(path.join(base, 'off')), await snapshotTree(path.join(base, 'on')));

    const tar = sampleTar(1);
    const threaded = await applyLayer(dir('threaded'), pieces(tar));
    const inThread = await applyLayer(dir('inline'), pieces(tar), { offThread: false });
    const js = await applyLayer(dir('js'), pieces(tar), { pureJs: true });
    expect(threaded).toBe(inThread);
    expect(threaded).toBe(js);
    expect(threaded).toBeGreaterThan(3 << 20);
    expectSameTree(await snapshotTree(path.join(base, 'threaded')), await snapshotTree(path.join(base, 'inline')));
    expectSameTree(await snapshotTree(path.join(base, 'threaded')), await snapshotTree(path.join(base, 'js')));
    expect(fs.existsSync(path.join(base, 'threaded', 'etc', 'f3'))).toBe(false);
  });

  test('an unsafe entry fails off-thread with the same CairnError code, subject and message as on the calling thread and in pure JS', async () => {
    const tar = Buffer.concat([entry({ name: 'esc', type: 'symlink', mode: 0o777, linkname: '../canary' }), entry({ name: 'esc/x', type: 'file', mode: 0o644, size: 1 }, Buffer.from('x')), tarTrailer()]);
    fs.mkdirSync(path.join(base, 'canary'));
    const threaded = await applyLayer(dir('t'), pieces(tar)).catch((e: unknown) => e);
    const inThread = await applyLayer(dir('i'), pieces(tar), { offThread: false }).catch((e: unknown) => e);
    const js = await applyLayer(dir('j'), pieces(tar), { pureJs: true }).catch((e: unknown) => e);
    expect(threaded).toBeInstanceOf(CairnError);
    expect(threaded).toMatchObject({ code: 'ERR_UNSAFE_ARCHIVE', subject: (inThread as CairnError).subject, message: (inThread as CairnError).message });
    expect(js).toMatchObject({ code: 'ERR_UNSAFE_ARCHIVE', subject: (inThread as CairnError).subject, message: (inThread as CairnError).message });
    expect(fs.readdirSync(path.join(base, 'canary'))).toEqual([]);
  });

  test('a truncated tar fails with ERR_INVALID_ARCHIVE and a missing target with ERR_INVALID_OPTION (a path, not a layer), as in-thread', async () => {
    const tar = sampleTar(2).subarray(0, 100_000);
    await expect(applyLayer(dir('t'), pieces(tar))).rejects.toMatchObject({ code: 'ERR_INVALID_ARCHIVE' });
    await expect(applyLayer(path.join(base, 'nope'), pieces(sampleTar(2)))).rejects.toMatchObject({ code: 'ERR_INVALID_OPTION' });
  });

  test("the caller's failing input stream rejects with that stream's own error, and the next apply works", async () => {
    const tar = sampleTar(3);
    const boom = new Error('network went away');
    const failing = Readable.from((async function* () { yield tar.subarray(0, 200_000); throw boom; })());
    await expect(applyLayer(dir('f'), failing)).rejects.toBe(boom);
    await expect(applyLayer(dir('after'), pieces(tar))).resolves.toBeGreaterThan(0);
  });

  test('a native failure while the caller still waits for slow input is not an unhandled rejection (Node would exit on one)', () => {
    // In a plain node process (jest swallows unhandled rejections): the default mode throws on them.
    const script = `
      import { Readable } from 'node:stream';
      import { applyLayer, encodeHeader, tarTrailer } from '@cairnfs/archive';
      const h = encodeHeader({ name: '../escape', type: 'file', mode: 0o644, size: 0 });
      const slow = Readable.from((async function* () {
        yield Buffer.concat([h, tarTrailer()]);
        await new Promise((r) => setTimeout(r, 300)); // the pool thread refuses the entry meanwhile
        yield Buffer.alloc(512);
      })());
      const err = await applyLayer(process.argv[1], slow).catch((e) => e);
      await new Promise((r) => setTimeout(r, 100));
      console.log('code=' + err.code);
    `;
    const out = execFileSync(process.execPath, ['--import', path.join(repoRoot, 'scripts/ts-register.mjs'), '--input-type=module', '-e', script, dir('slow')],
      { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    expect(out.trim()).toBe('code=ERR_UNSAFE_ARCHIVE');
  });

  test('more applies at once than pool threads all finish with trees equal to the pure-JS apply', async () => {
    const n = 6;
    const tars = Array.from({ length: n }, (_, i) => sampleTar(10 + i));
    const dirs = tars.map((_, i) => dir(`p${i}`));
    const bytes = await Promise.all(tars.map((t, i) => applyLayer(dirs[i]!, pieces(t))));
    for (const [i, t] of tars.entries()) {
      const ref = dir(`r${i}`);
      expect(bytes[i]).toBe(await applyLayer(ref, pieces(t), { pureJs: true }));
      expectSameTree(await snapshotTree(dirs[i]!), await snapshotTree(ref));
    }
  });

  test('a whole-file fs.ReadStream is read by the addon through its fd (the stream reads nothing and is closed after), on and off the calling thread, with the same tree', async () => {
    const tar = sampleTar(21);
    const file = path.join(base, 'layer.tar');
    fs.writeFileSync(file, tar);
    const viaPieces = await applyLayer(dir('pieces'), pieces(tar));
    for (const offThread of [true, false]) {
      const stream = fs.createReadStream(file, { highWaterMark: 64 * 1024 });
      const target = dir(`file-${offThread}`);
      expect(await applyLayer(target, stream, { offThread })).toBe(viaPieces);
      expect(stream.bytesRead).toBe(0);
      await new Promise((r) => setImmediate(r));
      expect(stream.destroyed).toBe(true);
      expectSameTree(await snapshotTree(target), await snapshotTree(path.join(base, 'pieces')));
    }
  });

  test('a ReadStream of a range, one already flowing, or of a fifo goes through the stream path and applies the same; a missing file fails with ENOENT', async () => {
    const tar = sampleTar(22);
    const file = path.join(base, 'layer.tar');
    fs.writeFileSync(file, Buffer.concat([tar, Buffer.alloc(4096, 0x55)])); // junk after the tar
    const ranged = fs.createReadStream(file, { start: 0, end: tar.length - 1 });
    expect(await applyLayer(dir('ranged'), ranged)).toBeGreaterThan(3 << 20);
    expect(ranged.bytesRead).toBe(tar.length);
    const flowing = fs.createReadStream(file);
    flowing.pause(); // readableFlowing false: somebody else decided how it flows
    expect(await applyLayer(dir('flowing'), flowing)).toBeGreaterThan(3 << 20);
    expect(flowing.bytesRead).toBeGreaterThan(0);
    expectSameTree(await snapshotTree(path.join(base, 'ranged')), await snapshotTree(path.join(base, 'flowing')));
    await expect(applyLayer(dir('missing'), fs.createReadStream(path.join(base, 'nope.tar')))).rejects.toMatchObject({ code: 'ENOENT' });
    // A fifo cannot be read with pread: it takes the stream path too.
    const fifo = path.join(base, 'layer.fifo');
    execFileSync('mkfifo', [fifo]);
    const writer = (async () => { const h = await fs.promises.open(fifo, 'w'); await h.write(tar); await h.close(); })();
    expect(await applyLayer(dir('fifo'), fs.createReadStream(fifo))).toBeGreaterThan(3 << 20);
    await writer;
    expectSameTree(await snapshotTree(path.join(base, 'fifo')), await snapshotTree(path.join(base, 'ranged')));
  });
});
