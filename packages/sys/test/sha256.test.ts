// The applier's SHA-256 (native/sha256.cc): Node's libcrypto looked up at run time, or the
// addon's own implementation where it is absent. Both must be SHA-256 exactly: the diff id
// of every imported layer is this digest.
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { applierSha256, sha256UsesLibcrypto } from '@cairnfs/sys';

const node = (chunks: Buffer[]) => { const h = createHash('sha256'); for (const c of chunks) h.update(c); return h.digest('hex'); };

// FIPS 180-2 appendix B and the NIST one-million-'a' vector.
const VECTORS: Array<[Buffer, string]> = [
  [Buffer.from(''), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'],
  [Buffer.from('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'],
  [Buffer.from('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq'), '248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1'],
  [Buffer.alloc(1_000_000, 'a'), 'cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0'],
];

describe.each([['libcrypto (or portable where absent)', false], ['portable', true]] as const)('applier SHA-256, %s', (_name, portable) => {
  test('known vectors', () => {
    for (const [input, hex] of VECTORS) expect(applierSha256(input, portable)).toBe(hex);
  });

  test('every length around the block and padding boundaries equals node:crypto', () => {
    const data = randomBytes(300);
    for (let n = 0; n <= 300; n++) expect([n, applierSha256(data.subarray(0, n), portable)]).toEqual([n, node([data.subarray(0, n)])]);
  });

  test('random data cut into random chunks equals node:crypto', () => {
    for (let round = 0; round < 20; round++) {
      const data = randomBytes(1 + Math.floor(Math.random() * 200_000));
      const chunks: Buffer[] = [];
      for (let i = 0; i < data.length;) { const n = Math.floor(Math.random() * 5000); chunks.push(data.subarray(i, i + n)); i += n; }
      expect(applierSha256(chunks, portable)).toBe(node([data]));
    }
  });
});

test('this Node exports libcrypto, and the applier uses it', () => {
  // Node 20-24 on Linux export OpenSSL's EVP calls; a build without them takes the portable path.
  expect(sha256UsesLibcrypto()).toBe(true);
});

test('CAIRN_SHA256_PORTABLE=1 makes the applier use its own implementation, with the same digests', () => {
  const script = `
    const { applierSha256, sha256UsesLibcrypto } = require('@cairnfs/sys');
    const data = require('node:crypto').randomBytes(100000);
    const want = require('node:crypto').createHash('sha256').update(data).digest('hex');
    process.stdout.write(JSON.stringify({ libcrypto: sha256UsesLibcrypto(), same: applierSha256([data.subarray(0, 777), data.subarray(777)]) === want }));`;
  const out = execFileSync(process.execPath, ['-e', script], { env: { ...process.env, CAIRN_SHA256_PORTABLE: '1' }, encoding: 'utf8' });
  expect(JSON.parse(out)).toEqual({ libcrypto: false, same: true });
});
