// A real file named like a whiteout cannot be packed as a file: in a layer tar the name
// is a deletion. Every packer (exportChanges, exportOverlayUpper, exportTree; the addon
// and pure JS alike) refuses it with ERR_UNSAFE_ARCHIVE unless told the directory's `.wh.`
// files are whiteouts already (aufs branches: whiteoutNames 'keep').
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { CairnError } from '@cairnfs/core';
import { exportChanges, exportOverlayUpper, exportTree, readTar } from '@cairnfs/archive';

async function names(r: Readable): Promise<string[]> {
  const out: string[] = [];
  for await (const { header } of readTar(r)) out.push(header.name);
  return out;
}

async function refusal(r: Readable | Promise<Readable>): Promise<CairnError> {
  const err = await names(await r).then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(CairnError);
  expect((err as CairnError).code).toBe('ERR_UNSAFE_ARCHIVE');
  return err as CairnError;
}

describe.each([false, true])('packing a file named .wh.* (pureJs: %s)', (pureJs) => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-whpack-'));
    await mkdir(join(dir, 'etc'));
    await writeFile(join(dir, 'etc/passwd'), 'root\n');
    await writeFile(join(dir, 'etc/.wh.passwd'), 'x');
  });
  afterEach(async () => { await rm(dir, { recursive: true, force: true }); });

  test('exportChanges refuses it, naming the path and what it would delete', async () => {
    const err = await refusal(exportChanges(dir, [{ path: '/etc', kind: 'modify' }, { path: '/etc/.wh.passwd', kind: 'add' }], { pureJs }));
    expect(err.subject).toBe('etc/.wh.passwd');
    expect(err.message).toMatch(/means a deletion .*\/etc\/passwd/);
  });

  test('exportOverlayUpper and exportTree refuse it too', async () => {
    await refusal(exportOverlayUpper(dir, { pureJs }));
    await refusal(exportTree(dir, { pureJs }));
  });

  test("whiteoutNames 'keep' packs it as it is (an aufs branch's whiteout)", async () => {
    expect(await names(exportChanges(dir, [{ path: '/etc/.wh.passwd', kind: 'add' }], { pureJs, whiteoutNames: 'keep' }))).toEqual(['etc/.wh.passwd']);
  });

  test('synthesised whiteouts are not affected: a deletion still packs as .wh.<name>', async () => {
    expect(await names(exportChanges(dir, [{ path: '/etc/gone', kind: 'delete' }], { pureJs }))).toEqual(['etc/.wh.gone']);
  });
});
