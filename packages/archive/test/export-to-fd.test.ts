// writeExportTo: an export written to an fd through two reused buffers must be byte for
// byte the tar its Readable gives, for each kind of export, across many buffer refills;
// any other stream is copied as it is; errors reach the caller and the stream is closed.
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { changesBetween, exportChanges, exportOverlayUpper, exportTree, writeExportTo } from '@cairnfs/archive';

let work: string;
let tree: string;

async function bytes(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

/** What writeExportTo wrote to a file, and whether the stream was closed by then. */
async function written(stream: Readable): Promise<{ tar: Buffer; closed: boolean }> {
  let closed = false;
  stream.once('close', () => { closed = true; });
  const file = join(work, 'out.tar');
  const handle = await open(file, 'w');
  try {
    await writeExportTo(stream, handle.fd);
  } finally {
    await handle.close();
  }
  await new Promise((resolve) => setImmediate(resolve));
  return { tar: await readFile(file), closed };
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'cairn-exportfd-'));
  tree = join(work, 'tree');
  // ~3.5 MiB of random content in files of odd sizes, so that entries straddle the 256 KiB
  // buffers and each of the two reused buffers is refilled many times: a buffer handed
  // back to the packer before its write finished would show as wrong bytes.
  for (let d = 0; d < 4; d++) {
    await mkdir(join(tree, `d${d}`, 'sub'), { recursive: true });
    for (let f = 0; f < 12; f++) {
      await writeFile(join(tree, `d${d}`, f % 2 ? 'sub' : '', `f${f}`), randomBytes(1 + ((d * 12 + f) * 15_013) % 150_000));
    }
  }
  await writeFile(join(tree, 'empty'), '');
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

test('an exportChanges, exportTree and exportOverlayUpper written to an fd are the bytes of their Readable', async () => {
  const changes = await changesBetween(tree, null);
  const expected = await bytes(exportChanges(tree, changes));
  expect(expected.length).toBeGreaterThan(3 * 1024 * 1024);
  const direct = await written(exportChanges(tree, changes));
  expect(direct.tar.equals(expected)).toBe(true);
  expect(direct.closed).toBe(true);
  expect((await written(await exportTree(tree))).tar.equals(await bytes(await exportTree(tree)))).toBe(true);
  expect((await written(exportOverlayUpper(tree))).tar.equals(await bytes(exportOverlayUpper(tree)))).toBe(true);
});

test('streams that are not a fresh native export are copied as they are: the pure-JS path, any Readable', async () => {
  const changes = await changesBetween(tree, null);
  const expected = await bytes(exportChanges(tree, changes));
  expect((await written(exportChanges(tree, changes, { pureJs: true }))).tar.equals(expected)).toBe(true);
  // Many small chunks, more than one gathered write's worth.
  const parts = Array.from({ length: 2_000 }, (_, i) => randomBytes(1 + (i % 1_024)));
  const other = await written(Readable.from(parts));
  expect(other.tar.equals(Buffer.concat(parts))).toBe(true);
  expect(other.closed).toBe(true);
});

test('a failing stream of another kind rejects writeExportTo with its error and leaves the fd to its owner', async () => {
  const failing = Readable.from((async function* () {
    yield Buffer.from('partial');
    throw Object.assign(new Error('no such image'), { code: 'ERR_IMAGE_NOT_FOUND' });
  })());
  const handle = await open(join(work, 'failed.tar'), 'w');
  try {
    await expect(writeExportTo(failing, handle.fd)).rejects.toMatchObject({ code: 'ERR_IMAGE_NOT_FOUND' });
    expect((await handle.stat()).isFile()).toBe(true); // still open: the caller closes it
  } finally {
    await handle.close();
  }
});

test('a stream already being read is not packed again from the start: writeExportTo writes what is left', async () => {
  const changes = await changesBetween(tree, null);
  const expected = await bytes(exportChanges(tree, changes));
  const stream = exportChanges(tree, changes);
  const first = await new Promise<Buffer>((resolve) => stream.once('readable', () => resolve(stream.read() as Buffer)));
  const rest = await written(stream);
  expect(Buffer.concat([first, rest.tar]).equals(expected)).toBe(true);
});

test('a packing error rejects writeExportTo with the error its Readable gives and closes the stream', async () => {
  const stream = exportChanges(tree, [{ path: '/d0/f0', kind: 'add' }, { path: '/no-such-file', kind: 'add' }]);
  let closed = false;
  stream.once('close', () => { closed = true; });
  const handle = await open(join(work, 'bad.tar'), 'w');
  try {
    await expect(writeExportTo(stream, handle.fd)).rejects.toMatchObject({ code: 'ERR_BACKEND_FAILED', message: expect.stringMatching(/no-such-file.*not in/) });
  } finally {
    await handle.close();
  }
  await new Promise((resolve) => setImmediate(resolve));
  expect(closed).toBe(true);
});
