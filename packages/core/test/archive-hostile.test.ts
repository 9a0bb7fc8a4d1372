// A catalogue of hostile and broken layer archives. Each must be refused with the right
// code, and a canary directory beside the target must stay byte-for-byte untouched.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { applyLayer, encodeHeader, tarTrailer, type ApplyOptions, type ErrorCode, type TarHeaderInput } from '@cairn/core';
import { chunked, fingerprint, isRoot, removeDir, tempDir } from './archive-helpers.js';

const pad = (n: number) => Buffer.alloc((512 - (n % 512)) % 512);
const entry = (h: TarHeaderInput, body?: Buffer) => Buffer.concat([encodeHeader(h), ...(body ? [body, pad(body.length)] : [])]);
const file = (name: string, content = 'pwned') => entry({ name, type: 'file', mode: 0o644, size: Buffer.byteLength(content) }, Buffer.from(content));
const dir = (name: string) => entry({ name, type: 'dir', mode: 0o755 });
const sym = (name: string, target: string) => entry({ name, type: 'symlink', mode: 0o777, linkname: target });
const hard = (name: string, target: string) => entry({ name, type: 'hardlink', mode: 0o644, linkname: target });
const tar = (...parts: Buffer[]) => Buffer.concat([...parts, tarTrailer()]);

function reseal(block: Buffer): void {
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += block[i]!;
  block.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
}

/** A metadata header ('x' PAX or 'L'/'K' GNU long name) with a raw body. */
function metaHeader(kind: 'x' | 'L' | 'K', body: Buffer): Buffer {
  const h = encodeHeader({ name: '././@LongLink', type: 'file', mode: 0o644, size: body.length });
  h[156] = kind.charCodeAt(0);
  reseal(h);
  return Buffer.concat([h, body, pad(body.length)]);
}

function pax(records: Array<[string, string]>): Buffer {
  return metaHeader('x', Buffer.concat(records.map(([k, v]) => {
    const rest = Buffer.from(` ${k}=${v}\n`);
    let len = rest.length + 1;
    len = rest.length + String(len).length;
    return Buffer.concat([Buffer.from(String(len)), rest]);
  })));
}

interface Case {
  name: string;
  tar: (ctx: { canary: string; layer: string }) => Buffer;
  code: ErrorCode | 'ok';
  opts?: ApplyOptions;
  /** Things already in the layer dir (a parent layer's tree). */
  prepare?: (ctx: { canary: string; layer: string }) => void;
  after?: (ctx: { canary: string; layer: string }) => void;
  rootOnly?: boolean;
}

const evilRootName = `cairn-hostile-${process.pid}`;

const cases: Case[] = [
  { name: '../ traversal in a file name', tar: () => tar(file('../canary/secret')), code: 'ERR_UNSAFE_ARCHIVE' },
  { name: '.. hidden in the middle of a path', tar: () => tar(dir('a'), file('a/../../canary/secret')), code: 'ERR_UNSAFE_ARCHIVE' },
  { name: 'absolute path to the canary', tar: ({ canary }) => tar(file(canary + '/secret')), code: 'ERR_UNSAFE_ARCHIVE' },
  { name: 'symlink to outside, then a file written through it', tar: () => tar(sym('esc', '../canary'), file('esc/secret')), code: 'ERR_UNSAFE_ARCHIVE' },
  { name: 'absolute symlink to the canary, then a new file under it', tar: ({ canary }) => tar(sym('c', canary), file('c/new')), code: 'ERR_UNSAFE_ARCHIVE' },
  { name: 'symlink to /, then mkdir under it', tar: () => tar(sym('root', '/'), dir(`root/${evilRootName}`)), code: 'ERR_UNSAFE_ARCHIVE',
    after: () => expect(fs.existsSync('/' + evilRootName)).toBe(false) },
  { name: 'hardlink to a file outside', tar: () => tar(hard('h', '../canary/secret')), code: 'ERR_UNSAFE_ARCHIVE' },
  { name: 'hardlink with an absolute target', tar: ({ canary }) => tar(hard('h', canary + '/secret')), code: 'ERR_UNSAFE_ARCHIVE' },
  { name: 'hardlink whose target path goes through an escaping symlink', tar: () => tar(sym('esc', '../canary'), hard('h', 'esc/secret')), code: 'ERR_UNSAFE_ARCHIVE' },
  { name: 'hardlink to an escaping symlink, then a file written through the link', tar: () => tar(sym('esc', '../canary'), hard('h', 'esc'), file('h/secret')), code: 'ERR_UNSAFE_ARCHIVE' },
  { name: 'hardlink to a directory', tar: () => tar(dir('d'), hard('h', 'd')), code: 'ERR_UNSAFE_ARCHIVE' },
  { name: "whiteout naming '..'", tar: () => tar(dir('a'), file('a/.wh...', '')), code: 'ERR_UNSAFE_ARCHIVE' },
  { name: "whiteout naming '.'", tar: () => tar(file('.wh..', '')), code: 'ERR_UNSAFE_ARCHIVE' },
  { name: 'whiteout with an empty name (.wh. of the root)', tar: () => tar(file('.wh.', '')), code: 'ERR_UNSAFE_ARCHIVE' },
  { name: 'absolute whiteout (/.wh.<canary>)', tar: ({ canary }) => tar(file(path.dirname(canary) + '/.wh.canary', '')), code: 'ERR_UNSAFE_ARCHIVE' },
  { name: 'whiteout deleting through an escaping symlink', tar: () => tar(sym('esc', '../canary'), file('esc/.wh.secret', '')), code: 'ERR_UNSAFE_ARCHIVE' },
  { name: 'opaque marker emptying a directory through a symlink', tar: () => tar(sym('esc', '../canary'), file('esc/.wh..wh..opq', '')), code: 'ERR_UNSAFE_ARCHIVE' },
  { name: 'overlay mode: whiteout device made through a symlink', tar: () => tar(sym('esc', '../canary'), file('esc/.wh.secret', '')), code: 'ERR_UNSAFE_ARCHIVE', opts: { whiteouts: 'overlay' } },
  { name: 'PAX path override to ../', tar: () => tar(pax([['path', '../canary/pwned']]), file('innocent')), code: 'ERR_UNSAFE_ARCHIVE' },
  { name: 'PAX linkpath override to ../ on a hardlink', tar: () => tar(pax([['linkpath', '../canary/secret']]), hard('h', 'innocent')), code: 'ERR_UNSAFE_ARCHIVE' },
  { name: 'GNU long name with ../', tar: () => tar(metaHeader('L', Buffer.from('../canary/pwned\0')), file('innocent')), code: 'ERR_UNSAFE_ARCHIVE' },
  { name: 'GNU long link with ../ on a hardlink', tar: () => tar(metaHeader('K', Buffer.from('../canary/secret\0')), hard('h', 'innocent')), code: 'ERR_UNSAFE_ARCHIVE' },
  { name: 'NUL inside a PAX path', tar: () => tar(pax([['path', 'ok\0/../../canary/x']]), file('innocent')), code: 'ERR_UNSAFE_ARCHIVE' },
  { name: 'directory replaced by an escaping symlink, then a file written through it', tar: () => tar(dir('d'), file('d/ok', 'fine'), sym('d', '../canary'), file('d/secret')), code: 'ERR_UNSAFE_ARCHIVE' },
  { name: "a symlink already in the layer dir (parent's tree) on the path", prepare: ({ layer }) => fs.symlinkSync('../canary', path.join(layer, 'etc')), tar: () => tar(file('etc/secret')), code: 'ERR_UNSAFE_ARCHIVE' },
  { name: 'a non-directory replacing the layer root', tar: () => tar(file('./', 'x')), code: 'ERR_UNSAFE_ARCHIVE' },
  { name: 'character device refused with noDevices', tar: () => tar(entry({ name: 'mem', type: 'char', mode: 0o600, devmajor: 1, devminor: 1 })), code: 'ERR_UNSAFE_ARCHIVE', opts: { noDevices: true } },
  { name: 'truncated tar (cut inside file data)', tar: () => tar(file('big', 'x'.repeat(5000))).subarray(0, 3000), code: 'ERR_INVALID_ARCHIVE' },
  { name: 'truncated tar (cut inside a header)', tar: () => tar(dir('a'), dir('b')).subarray(0, 700), code: 'ERR_INVALID_ARCHIVE' },
  { name: 'garbage bytes', tar: () => Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919 + 13) & 0xff)), code: 'ERR_INVALID_ARCHIVE' },
  { name: 'bad header checksum', tar: () => { const t = tar(file('f')); t[0] ^= 0x20; return t; }, code: 'ERR_INVALID_ARCHIVE' },
  { name: 'huge declared size (PAX size 10^12) then EOF', tar: () => Buffer.concat([pax([['size', '1000000000000']]), encodeHeader({ name: 'huge', type: 'file', mode: 0o644, size: 0 }), Buffer.alloc(2048, 1)]), code: 'ERR_INVALID_ARCHIVE' },
  { name: 'a 100 MB PAX header (memory bomb)', tar: () => { const h = encodeHeader({ name: 'x', type: 'file', mode: 0o644, size: 100 << 20 }); h[156] = 0x78; reseal(h); return Buffer.concat([h, Buffer.alloc(4096)]); }, code: 'ERR_INVALID_ARCHIVE' },
  { name: 'malformed PAX record', tar: () => tar(metaHeader('x', Buffer.from('99 path=x\n')), file('f')), code: 'ERR_INVALID_ARCHIVE' },
  { name: 'a zero block followed by more entries', tar: () => Buffer.concat([Buffer.alloc(512), file('late'), tarTrailer()]), code: 'ERR_INVALID_ARCHIVE' },
  // Tricky but legitimate: the symlink is replaced, never written through.
  { name: 'file over an escaping symlink replaces the symlink', tar: () => tar(sym('esc', '../canary/secret'), file('esc', 'mine')), code: 'ok',
    after: ({ layer }) => expect(fs.readFileSync(path.join(layer, 'esc'), 'utf8')).toBe('mine') },
  { name: 'directory over an escaping symlink replaces the symlink', tar: () => tar(sym('esc', '../canary'), dir('esc'), file('esc/secret', 'mine')), code: 'ok',
    after: ({ layer }) => expect(fs.lstatSync(path.join(layer, 'esc')).isDirectory()).toBe(true) },
  { name: 'hardlink to an escaping symlink links the symlink itself, not its target', tar: () => tar(sym('esc', '../canary/secret'), hard('h', 'esc')), code: 'ok',
    after: ({ layer }) => expect(fs.readlinkSync(path.join(layer, 'h'))).toBe('../canary/secret') },
];

describe('hostile archives', () => {
  let work: string;
  let canary: string;
  let layer: string;
  beforeEach(() => {
    work = tempDir('hostile');
    canary = path.join(work, 'canary');
    layer = path.join(work, 'layer');
    fs.mkdirSync(path.join(canary, 'dir'), { recursive: true });
    fs.writeFileSync(path.join(canary, 'secret'), 'do not touch');
    fs.writeFileSync(path.join(canary, 'dir/inner'), 'nor this');
    fs.mkdirSync(layer);
  });
  afterEach(() => removeDir(work));

  test('the catalogue has at least 20 refusals', () => {
    expect(cases.filter((c) => c.code !== 'ok').length).toBeGreaterThanOrEqual(20);
  });

  for (const c of cases) {
    const t = c.rootOnly && !isRoot ? test.skip : test;
    t(`${c.code === 'ok' ? 'applies safely' : `refuses with ${c.code}`}: ${c.name}`, async () => {
      const ctx = { canary, layer };
      c.prepare?.(ctx);
      const before = fingerprint(canary);
      const data = c.tar(ctx);
      const run = applyLayer(layer, chunked(data, 700), c.opts);
      if (c.code === 'ok') {
        await run;
      } else {
        const err = await run.then(() => undefined, (e: unknown) => e);
        expect(err).toMatchObject({ name: 'CairnError', code: c.code });
        expect((err as Error).message.length).toBeGreaterThan(20);
      }
      expect(fingerprint(canary)).toBe(before);
      expect(fs.readdirSync(work).sort()).toEqual(['canary', 'layer']);
      c.after?.(ctx);
    });
  }

  test('an unsafe entry is reported by name', async () => {
    const err = await applyLayer(layer, chunked(tar(dir('ok'), sym('esc', '../canary'), file('esc/secret')), 512)).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_UNSAFE_ARCHIVE', subject: 'esc/secret' });
    expect((err as Error).message).toContain('"esc"');
  });
});
