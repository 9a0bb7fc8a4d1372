import { encodeHeader, tarTrailer } from '@cairnfs/archive';
import { prng } from './crash.js';

/**
 * A mutation fuzzer for layer tars: valid seed archives, then bit flips, header field
 * edits (with the checksum recomputed, so the edit reaches the parser's later checks),
 * truncations, block duplication and entry reordering. Pure and seeded: case n of seed s
 * is always the same bytes, so a failure is replayed from the two numbers.
 */

const pad = (n: number): Buffer => Buffer.alloc((512 - (n % 512)) % 512);

function entry(h: Parameters<typeof encodeHeader>[0], body?: Buffer): Buffer {
  return Buffer.concat([encodeHeader(h), ...(body ? [body, pad(body.length)] : [])]);
}

/** Small valid layer tars covering every entry kind the applier handles. */
export function fuzzSeeds(): Buffer[] {
  const f = (name: string, text: string, mode = 0o644): Buffer => entry({ name, type: 'file', mode, size: Buffer.byteLength(text) }, Buffer.from(text));
  const d = (name: string): Buffer => entry({ name, type: 'dir', mode: 0o755 });
  const end = tarTrailer();
  return [
    Buffer.concat([d('etc'), f('etc/hosts', '127.0.0.1 localhost\n'), entry({ name: 'etc/link', type: 'symlink', mode: 0o777, linkname: 'hosts' }), end]),
    Buffer.concat([d('a'), d('a/b'), f('a/b/c', 'x'.repeat(1500)), entry({ name: 'a/h', type: 'hardlink', mode: 0o644, linkname: 'a/b/c' }), end]),
    Buffer.concat([d('w'), f('w/.wh.gone', ''), f('w/.wh..wh..opq', ''), f('w/kept', 'k'), end]),
    Buffer.concat([entry({ name: 'p'.repeat(90) + '/' + 'q'.repeat(90), type: 'file', mode: 0o4755, size: 3 }, Buffer.from('abc')), entry({ name: 'fifo', type: 'fifo', mode: 0o600 }), end]),
    Buffer.concat([entry({ name: 'x', type: 'file', mode: 0o600, size: 4, xattrs: new Map([['user.k', Buffer.from('v')]]) }, Buffer.from('data')), d('dir'), end]),
  ];
}

function reseal(block: Buffer, at: number): void {
  block.fill(0x20, at + 148, at + 156);
  let sum = 0;
  for (let i = at; i < at + 512; i++) sum += block[i]!;
  block.write(sum.toString(8).padStart(6, '0') + '\0 ', at + 148, 'latin1');
}

/** Offsets of header blocks (a non-zero block with a valid-looking 'ustar' magic). */
function headerOffsets(tar: Buffer): number[] {
  const out: number[] = [];
  for (let at = 0; at + 512 <= tar.length; at += 512) if (tar.toString('latin1', at + 257, at + 262) === 'ustar') out.push(at);
  return out;
}

const FIELDS: Array<[offset: number, length: number]> = [[0, 100], [100, 8], [108, 8], [116, 8], [124, 12], [136, 12], [156, 1], [157, 100], [329, 8], [337, 8], [345, 155]];
const NASTY = ['../', '/', '\0', '\n', '..', '.wh.', '.wh..wh..opq', '77777777777', '-1', '\xff', ' ', '/etc/passwd', 'a/../..'];

/** Case `n` of the fuzz run with `seed`: one to three mutations of one seed tar. */
export function fuzzCase(seeds: Buffer[], seed: number, n: number): Buffer {
  const rnd = prng((seed ^ Math.imul(n + 1, 0x9e3779b1)) >>> 0);
  const int = (k: number): number => Math.floor(rnd() * k);
  let tar = Buffer.from(seeds[int(seeds.length)]!);
  const rounds = 1 + int(3);
  for (let r = 0; r < rounds; r++) {
    const heads = headerOffsets(tar);
    switch (int(6)) {
      case 0: { // bit flips anywhere
        for (let i = 0, k = 1 + int(8); i < k; i++) tar[int(tar.length)] ^= 1 << int(8);
        break;
      }
      case 1: { // a header field edit, checksum fixed up
        if (heads.length === 0) break;
        const at = heads[int(heads.length)]!;
        const [off, len] = FIELDS[int(FIELDS.length)]!;
        const text = rnd() < 0.5 ? NASTY[int(NASTY.length)]! : String(int(1 << 30));
        tar.fill(0, at + off, at + off + len);
        tar.write(text.slice(0, len), at + off, 'latin1');
        if (off === 156) tar[at + 156] = '0123456789gxLKSDV'.charCodeAt(int(17));
        reseal(tar, at);
        break;
      }
      case 2: // truncation
        tar = tar.subarray(0, int(tar.length));
        break;
      case 3: { // a block duplicated at another block boundary
        const blocks = Math.floor(tar.length / 512);
        if (blocks < 2) break;
        const from = int(blocks) * 512;
        const to = int(blocks) * 512;
        tar = Buffer.concat([tar.subarray(0, to), tar.subarray(from, from + 512), tar.subarray(to)]);
        break;
      }
      case 4: { // two entries swapped (headers with their bodies)
        if (heads.length < 2) break;
        const i = int(heads.length - 1);
        const a = heads[i]!;
        const b = heads[i + 1]!;
        const endB = heads[i + 2] ?? tar.length - 1024;
        if (endB <= b) break;
        tar = Buffer.concat([tar.subarray(0, a), tar.subarray(b, endB), tar.subarray(a, b), tar.subarray(endB)]);
        break;
      }
      case 5: // random bytes in place of one block
        if (tar.length >= 512) {
          const at = int(Math.floor(tar.length / 512)) * 512;
          for (let i = 0; i < 512; i++) tar[at + i] = int(256);
        }
        break;
    }
  }
  return tar;
}
