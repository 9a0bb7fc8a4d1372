import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CairnError } from '@cairnfs/core';
import { vfsDriver } from '@cairnfs/vfs';

// vfs size options where they cannot be enforced (a temp dir that is not xfs with
// prjquota). Enforcement is tested in the VM: test/vm/quota.vmtest.ts.

async function codeOf(p: Promise<unknown>): Promise<string> {
  const err = await p.then(() => null, (e: unknown) => e);
  return err instanceof CairnError ? err.code : `not a CairnError: ${String(err)}`;
}

let root: string;
beforeEach(async () => { root = await mkdtemp(join(tmpdir(), 'cairn-vfs-quota-')); });
afterEach(async () => { await rm(root, { recursive: true, force: true }); });
const ctx = (options: Record<string, string> = {}) => ({ root, home: join(root, 'vfs'), options, lockTimeoutMs: 0 });

test('vfs.size where quotas cannot work is refused at open with ERR_QUOTA_UNSUPPORTED naming vfs.size', async () => {
  const err = await vfsDriver.open(ctx({ 'vfs.size': '1G' })).then(() => null, (e: unknown) => e);
  expect((err as CairnError).code).toBe('ERR_QUOTA_UNSUPPORTED');
  expect((err as CairnError).message).toMatch(/^vfs\.size: .*prjquota/);
});

test('unknown vfs.* options and a bad vfs.size are ERR_INVALID_OPTION; other drivers\' options are ignored', async () => {
  expect(await codeOf(vfsDriver.open(ctx({ 'vfs.color': 'red' })))).toBe('ERR_INVALID_OPTION');
  expect(await codeOf(vfsDriver.open(ctx({ 'vfs.size': 'huge' })))).toBe('ERR_INVALID_OPTION');
  const d = await vfsDriver.open(ctx({ 'overlay2.size': '1G' }));
  await d.cleanup();
});

test('storageOpt: size on create (image layer) and where quotas cannot work is ERR_QUOTA_UNSUPPORTED, other keys ERR_INVALID_OPTION; no layer is left', async () => {
  const d = await vfsDriver.open(ctx());
  try {
    expect(await codeOf(d.create('img', null, { storageOpt: { size: '16M' } }))).toBe('ERR_QUOTA_UNSUPPORTED');
    expect(await codeOf(d.createReadWrite('rw', null, { storageOpt: { size: '16M' } }))).toBe('ERR_QUOTA_UNSUPPORTED');
    expect(await codeOf(d.createReadWrite('rw', null, { storageOpt: { size: 'lots' } }))).toBe('ERR_INVALID_OPTION');
    expect(await codeOf(d.createReadWrite('rw', null, { storageOpt: { color: 'red' } }))).toBe('ERR_INVALID_OPTION');
    expect(await d.exists('img')).toBe(false);
    expect(await d.exists('rw')).toBe(false);
    expect(await readdir(join(d.home, 'dir'))).toEqual([]);
  } finally {
    await d.cleanup();
  }
});
