// SplitReplay (the byte-exact export) while a racer swaps what it is about to read: a file
// with /dev/zero, and a directory with a symlink to a host directory whose file has the
// same name and size. The replay checks every file by fstatat before its first byte, keeps
// the last file's directory open for the next, and opens a file O_NOFOLLOW and reads it only
// if that fd is the regular file recorded; whatever the swap hits, no byte of the device or
// of the host file is ever written out, and every failure is one of the archive errors.
import { closeSync, mkdirSync, openSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { constants, mknodSync, openSplitReplay } from '@cairnfs/sys';
import { describeBackend, startSwapRacer } from '@cairnfs/testkit';
import { drainReplay, scratch, type Scratch } from './helpers.js';

const ROUNDS = 300;
const SIZE = 128 << 10;
const CONTENT = 0x41;
const HEADER = 0x01;

let s: Scratch;
beforeEach(async () => { s = await scratch('cairn-splitreplay-race-'); });
afterEach(async () => { await s.cleanup(); });

const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; };
const f64 = (n: number) => { const b = Buffer.alloc(8); b.writeDoubleBE(n); return b; };

/** The split of a tar holding d/f (SIZE bytes): a 512-byte header of HEADER bytes, the content, the end. */
function splitFile(): string {
  const path = 'd/f';
  const records = Buffer.concat([
    Buffer.from('R'), u32(512), Buffer.alloc(512, HEADER),
    Buffer.from('S'), u32(path.length), Buffer.from(path), f64(SIZE),
    Buffer.from('F'), u32(path.length), Buffer.from(path), f64(0), f64(SIZE),
    Buffer.from('R'), u32(1024), Buffer.alloc(1024),
  ]);
  const file = join(s.dir, 'split.gz');
  writeFileSync(file, gzipSync(records));
  return file;
}

/** One replay of `root`: its outcome, and how many content bytes it wrote that are not the layer's. */
async function replayOnce(root: string, split: string): Promise<{ outcome: string; foreign: number }> {
  const rootFd = openSync(root, 'r');
  const splitFd = openSync(split, 'r');
  const r = openSplitReplay(rootFd, splitFd);
  const out: Buffer[] = [];
  let outcome = 'ok';
  try {
    await drainReplay(r, out, 64 << 10);
  } catch (err) {
    const e = err as { cairnCode?: string; code?: string };
    outcome = e.cairnCode ?? e.code ?? String(err);
  } finally {
    r.close();
    closeSync(rootFd);
    closeSync(splitFd);
  }
  const content = Buffer.concat(out).subarray(512, 512 + SIZE);
  let foreign = 0;
  for (const b of content) if (b !== CONTENT) foreign++;
  return { outcome, foreign };
}

async function race(root: string, racerOpts: Parameters<typeof startSwapRacer>[0], what: string): Promise<Record<string, number>> {
  const split = splitFile();
  const racer = await startSwapRacer(racerOpts);
  const outcomes: Record<string, number> = {};
  let foreign = 0;
  let swaps = 0;
  try {
    for (let r = 0; r < ROUNDS; r++) {
      const one = await replayOnce(root, split);
      foreign += one.foreign;
      outcomes[one.outcome] = (outcomes[one.outcome] ?? 0) + 1;
    }
  } finally {
    swaps = (await racer.stop()).swaps;
  }
  console.log(`split replay race (${what}): ${swaps} swaps, ${JSON.stringify(outcomes)}`);
  expect(swaps).toBeGreaterThan(0);
  expect(foreign).toBe(0);
  expect(Object.keys(outcomes).filter((k) => k !== 'ok' && k !== 'ERR_UNSAFE_ARCHIVE' && k !== 'ERR_INVALID_ARCHIVE')).toEqual([]);
  // The racer must have been seen, or the test proves nothing.
  expect((outcomes.ERR_UNSAFE_ARCHIVE ?? 0) + (outcomes.ERR_INVALID_ARCHIVE ?? 0)).toBeGreaterThan(0);
  return outcomes;
}

describeBackend('root', process.getuid?.() === 0 ? null : 'making a device node needs root', () => {
  test('replaying while d/f is swapped with /dev/zero: no device byte written, every failure an archive error', async () => {
    const root = join(s.dir, 'layer');
    mkdirSync(join(root, 'd'), { recursive: true });
    writeFileSync(join(root, 'd', 'f'), Buffer.alloc(SIZE, CONTENT));
    mknodSync(join(root, 'd', 'z'), constants.S_IFCHR | 0o666, 1, 5);
    await race(root, { dir: join(root, 'd'), a: 'f', b: 'z' }, 'file and /dev/zero');
  }, 60_000);
});

test('replaying while the directory d is swapped with a symlink to a host directory of the same names and sizes: no host byte written', async () => {
  const root = join(s.dir, 'layer');
  const host = join(s.dir, 'host');
  mkdirSync(join(root, 'd'), { recursive: true });
  mkdirSync(host);
  writeFileSync(join(root, 'd', 'f'), Buffer.alloc(SIZE, CONTENT));
  writeFileSync(join(host, 'f'), Buffer.alloc(SIZE, 0x48));
  symlinkSync(host, join(root, 'e'));
  await race(root, { dir: root, a: 'd', b: 'e', symlinkTo: host }, 'directory and host symlink');
}, 60_000);
