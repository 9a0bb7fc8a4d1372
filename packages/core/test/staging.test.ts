import { mkdtemp, readdir, rm, stat, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeStagingDir, commitStaged, discardDir, sweepLeftovers, STAGING_DIR, TRASH_DIR } from '@cairnfs/core';

let home: string;
beforeEach(async () => { home = await mkdtemp(join(tmpdir(), 'cairn-staging-')); });
afterEach(async () => { await rm(home, { recursive: true, force: true }); });

test('a staged layer is invisible at its final path until committed, then fully there', async () => {
  const staged = await makeStagingDir(home, 'layer1');
  await writeFile(join(staged, 'content'), 'x');
  await expect(stat(join(home, 'layer1'))).rejects.toMatchObject({ code: 'ENOENT' });
  await commitStaged(staged, join(home, 'layer1'));
  expect(await readdir(join(home, 'layer1'))).toEqual(['content']);
  expect(await readdir(join(home, STAGING_DIR))).toEqual([]);
});

test('discardDir makes the layer disappear and reclaims it', async () => {
  await mkdir(join(home, 'gone', 'deep'), { recursive: true });
  await discardDir(home, join(home, 'gone'), 'gone');
  await expect(stat(join(home, 'gone'))).rejects.toMatchObject({ code: 'ENOENT' });
  expect(await readdir(join(home, TRASH_DIR))).toEqual([]);
});

test('sweepLeftovers deletes interrupted creates and removes but never a committed layer', async () => {
  await makeStagingDir(home, 'half');
  await mkdir(join(home, TRASH_DIR, 'old-123', 'x'), { recursive: true });
  await mkdir(join(home, 'kept'));
  const seen: string[] = [];
  const swept = await sweepLeftovers(home, async (p) => { seen.push(p); });
  expect(swept).toHaveLength(2);
  expect(seen).toEqual(swept);
  expect(await readdir(join(home, STAGING_DIR))).toEqual([]);
  expect(await readdir(join(home, TRASH_DIR))).toEqual([]);
  expect((await stat(join(home, 'kept'))).isDirectory()).toBe(true);
});
