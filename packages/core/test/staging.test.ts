import { mkdtemp, readdir, rm, stat, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { basename } from 'node:path';
import { makeStagingDir, commitStaged, discardDir, parseOwnedName, processStartTime, sweepLeftovers, STAGING_DIR, TRASH_DIR } from '@cairnfs/core';

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

test('sweepLeftovers deletes what dead processes left, never a live process\'s work in progress or a committed layer', async () => {
  const mine = await makeStagingDir(home, 'half');
  expect(parseOwnedName(basename(mine))).toEqual({ id: 'half', owner: { pid: process.pid, start: processStartTime(process.pid) } });
  // pid 1 is alive, but did not start at tick 1: a reused pid, its owner is gone.
  await mkdir(join(home, STAGING_DIR, 'dead@1.1@0123456789ab', 'x'), { recursive: true });
  await mkdir(join(home, TRASH_DIR, 'old-123', 'x'), { recursive: true }); // an older cairn's name: no owner, gone
  await mkdir(join(home, TRASH_DIR, 'kept@1.1@0123456789ab'), { recursive: true });
  await mkdir(join(home, 'kept'));
  const seen: string[] = [];
  const swept = await sweepLeftovers(home, { beforeDelete: async (p) => { seen.push(p); }, keep: (p) => basename(p).startsWith('kept@') });
  expect(swept.map((p) => basename(p)).sort()).toEqual(['dead@1.1@0123456789ab', 'old-123']);
  expect(seen).toEqual(swept);
  expect(await readdir(join(home, STAGING_DIR))).toEqual([basename(mine)]);
  expect(await readdir(join(home, TRASH_DIR))).toEqual(['kept@1.1@0123456789ab']);
  expect((await stat(join(home, 'kept'))).isDirectory()).toBe(true);
});
