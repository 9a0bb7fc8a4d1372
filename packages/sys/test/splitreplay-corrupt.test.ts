// The replay's split parser (native/split_replay.cc) against corrupt splits, seeded and
// repeatable: lengths and sizes set to edge values (NaN, infinities, 2^53, 2^32 - 1),
// paths pointed at a symlink to a host file, a fifo, a directory, out of the layer, records
// cut, doubled and reordered, and the gzip stream's own bytes flipped. Each replay must end
// in one of two ways: a tar with its digest, no longer than the size recorded at import, or
// a coded error (ERR_INVALID_ARCHIVE, ERR_UNSAFE_ARCHIVE) or an errno error. It must never
// read the host file, hang or crash; under scripts/sanitize.sh it also runs with
// ASan/UBSan.
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { openSplitReplay } from '@cairnfs/sys';
import { drainReplay, scratch, type Scratch } from './helpers.js';
import { raw, seg, size, u32, zeros } from './splitrecords.js';

let s: Scratch;
beforeAll(async () => { s = await scratch(); });
afterAll(async () => { await s.cleanup(); });

// Short enough that any segment of the host file read would carry it whole.
const SECRET = 'H0$T';

/** A small layer beside a host file, and the records that rebuild its tar. */
function layer(): { root: string; records: Buffer[]; tarBytes: number } {
  const root = join(s.dir, 'layer');
  mkdirSync(join(root, 'dir'), { recursive: true });
  writeFileSync(join(root, 'a'), 'hello');
  const b = Buffer.alloc(70000);
  for (let i = 0; i < b.length; i++) b[i] = (i * 7) & 0xff;
  writeFileSync(join(root, 'dir/b'), b);
  writeFileSync(join(root, 'empty'), '');
  writeFileSync(join(s.dir, 'host'), SECRET.repeat(64));
  symlinkSync(join(s.dir, 'host'), join(root, 'link'));
  symlinkSync(s.dir, join(root, 'dirlink'));
  execFileSync('mkfifo', [join(root, 'fifo')]);
  const header = (c: number) => Buffer.concat([Buffer.alloc(100, c), Buffer.alloc(412)]);
  const records = [
    raw(header(0x61)), size('a', 5), seg('a', 0, 5), raw(Buffer.alloc(507, 0)),
    raw(header(0x62)), size('dir/b', b.length), seg('dir/b', 0, 40000), seg('dir/b', 40000, b.length - 40000), zeros(512 - (b.length % 512)),
    raw(header(0x63)), size('empty', 0), zeros(1024),
  ];
  const tarBytes = 512 + 5 + 507 + 512 + b.length + (512 - (b.length % 512)) + 512 + 1024;
  return { root, records, tarBytes };
}

function prng(seed: number) {
  let x = seed >>> 0 || 1;
  return (n: number) => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return x % n;
  };
}

const LENGTHS = [0, 1, 511, 512, 65535, 65536, 65537, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 0x7fffffff, 0xffffffff];
const NUMBERS = [0, 4, 5, 128, NaN, Infinity, -Infinity, -1, -0, 5e-324, 0.5, 2 ** 31, 2 ** 32, 2 ** 53 - 1, 2 ** 53, 2 ** 53 + 2, 2 ** 63, 1e300, 69999, 70000, 70001];
const PATHS = ['link', 'dirlink/host', 'fifo', 'dir', '.', '', '../host', '../../../../host', '/a', 'a/', 'dir/../a', 'missing', 'a\0b', 'x'.repeat(5000)];

/** One mutation of the record list, as the records' bytes (`pick` draws from the seed). */
function mutate(records: Buffer[], pick: (n: number) => number): Buffer {
  const recs = records.map((r) => Buffer.from(r));
  const at = pick(recs.length);
  const rec = recs[at]!;
  const kind = String.fromCharCode(rec[0]!);
  const pathLen = kind === 'S' || kind === 'F' ? rec.readUInt32BE(1) : 0;
  switch (pick(8)) {
    case 0: // a length field
      rec.writeUInt32BE(LENGTHS[pick(LENGTHS.length)]!, 1);
      break;
    case 1: // a size, position or length
      if (kind === 'S' || kind === 'F') rec.writeDoubleBE(NUMBERS[pick(NUMBERS.length)]!, 5 + pathLen + (kind === 'F' ? 8 * pick(2) : 0));
      else rec[0] = 'SFRZX\0'.charCodeAt(pick(6));
      break;
    case 2: { // the path of a segment, or of a size
      const named = recs.map((r, i) => [r, i] as const).filter(([r]) => r[0] === 0x46 || (r[0] === 0x53 && pick(3) === 0));
      const [target, i] = named[pick(named.length)]!;
      const len = target.readUInt32BE(1);
      const path = PATHS[pick(PATHS.length)]!;
      recs[i] = Buffer.concat([target.subarray(0, 1), u32(Buffer.byteLength(path)), Buffer.from(path), target.subarray(5 + len)]);
      break;
    }
    case 3: // a few bytes anywhere
      for (let i = 0, n = 1 + pick(4); i < n; i++) rec[pick(rec.length)] = pick(256);
      break;
    case 4: { // cut
      const whole = Buffer.concat(recs);
      return whole.subarray(0, pick(whole.length));
    }
    case 5: // doubled
      recs.splice(at, 0, rec);
      break;
    case 6: // moved
      recs.splice(pick(recs.length), 0, ...recs.splice(at, 1));
      break;
    default: // a record of each kind, pointed at what it must not read
      recs.splice(at, 0, size(PATHS[pick(PATHS.length)]!, NUMBERS[pick(NUMBERS.length)]!),
        seg(PATHS[pick(PATHS.length)]!, NUMBERS[pick(NUMBERS.length)]!, NUMBERS[pick(NUMBERS.length)]!), zeros(LENGTHS[pick(LENGTHS.length)]!));
  }
  return Buffer.concat(recs);
}

async function replay(root: string, gz: Buffer, expectedBytes: number | undefined, chunk: number) {
  const splitPath = join(s.dir, 'split.gz');
  writeFileSync(splitPath, gz);
  const rootFd = openSync(root, 'r');
  const splitFd = openSync(splitPath, 'r');
  const r = openSplitReplay(rootFd, splitFd, expectedBytes);
  const out: Buffer[] = [];
  try {
    await drainReplay(r, out, chunk);
    return { data: Buffer.concat(out), state: r.digest() };
  } catch (err) {
    return { data: Buffer.concat(out), err: err as { cairnCode?: string; code?: string; message: string } };
  } finally {
    r.close();
    closeSync(rootFd);
    closeSync(splitFd);
  }
}

/** How a replay ended, or what is wrong with how it ended. */
function outcome(got: Awaited<ReturnType<typeof replay>>, expectedBytes: number | undefined): string {
  if (got.data.includes(SECRET)) return 'read the host file';
  if (expectedBytes !== undefined && got.data.length > expectedBytes) return `wrote ${got.data.length} bytes, more than the ${expectedBytes} recorded`;
  if (!got.err) return got.state?.done && got.state.bytes === got.data.length && /^[0-9a-f]{64}$/.test(got.state.digest) ? 'rebuilt' : `ended without a digest: ${JSON.stringify(got.state)}`;
  if (got.err.cairnCode === 'ERR_INVALID_ARCHIVE' || got.err.cairnCode === 'ERR_UNSAFE_ARCHIVE') return got.err.cairnCode;
  if (got.err.code && /^E[A-Z]+$/.test(got.err.code)) return 'errno';
  return `uncoded error: ${got.err.message}`;
}

test('600 seeded corruptions of a split: each rebuilds a tar with its digest or fails with a coded error, never past the recorded size, never reading the host file', async () => {
  const { root, records, tarBytes } = layer();
  const sound = await replay(root, gzipSync(Buffer.concat(records)), tarBytes, 4096);
  expect(sound.err?.message ?? outcome(sound, tarBytes)).toBe('rebuilt');
  expect(sound.data.length).toBe(tarBytes);
  const seen = new Map<string, number>();
  const wrong: string[] = [];
  for (let seed = 1; seed <= 600; seed++) {
    const pick = prng(seed * 2654435761);
    let gz: Buffer;
    if (pick(5) === 0) {
      // The gzip stream itself: bytes flipped or cut.
      gz = gzipSync(Buffer.concat(records));
      if (pick(2) === 0) gz = gz.subarray(0, pick(gz.length));
      else for (let i = 0, n = 1 + pick(3); i < n; i++) gz[pick(gz.length)] = pick(256);
    } else {
      const bytes = mutate(records, pick);
      gz = pick(3) === 0 ? Buffer.concat([gzipSync(bytes.subarray(0, bytes.length >> 1)), gzipSync(bytes.subarray(bytes.length >> 1))]) : gzipSync(bytes);
    }
    const expected = pick(2) === 0 ? tarBytes : undefined;
    const got = await replay(root, gz, expected, [512, 4096, 1 << 20][pick(3)]!);
    const how = outcome(got, expected);
    seen.set(how, (seen.get(how) ?? 0) + 1);
    if (!['rebuilt', 'ERR_INVALID_ARCHIVE', 'ERR_UNSAFE_ARCHIVE', 'errno'].includes(how)) wrong.push(`seed ${seed}: ${how}`);
  }
  expect(wrong).toEqual([]);
  // The corruptions reach both refusals and some still rebuild (a moved zero run, say): the
  // mix shows the mutations get past the gzip layer into the records.
  expect(seen.get('ERR_INVALID_ARCHIVE')).toBeGreaterThan(200);
  expect(seen.get('ERR_UNSAFE_ARCHIVE')).toBeGreaterThan(2);
  expect(seen.get('rebuilt')).toBeGreaterThan(50);
}, 120_000);
