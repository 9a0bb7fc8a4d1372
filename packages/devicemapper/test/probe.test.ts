import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isCairnError } from '@cairnfs/core';
import { devicemapperDriver, kernelMissing } from '@cairnfs/devicemapper';

// On a kernel without device-mapper (this project's usual CI host) the driver must say so
// and refuse to open; on one with it (the test VM) probe says usable. Either way nothing
// is created by probe.
describe('devicemapper probe', () => {
  let root: string;
  beforeEach(async () => { root = await mkdtemp(join(tmpdir(), 'cairn-dmprobe-')); });
  afterEach(async () => { await rm(root, { recursive: true, force: true }); });

  const ctx = () => ({ root, home: join(root, 'devicemapper'), options: {}, lockTimeoutMs: 0 });

  test('probe reports the kernel\'s lack of device-mapper as ERR_NOT_SUPPORTED with the reason, and open refuses the same way', async () => {
    const missing = kernelMissing();
    const p = await devicemapperDriver.probe(ctx());
    expect(await readdir(root)).toEqual([]);
    if (missing === null) {
      expect(p.code).not.toBe('ERR_NOT_SUPPORTED');
      return;
    }
    expect(p).toMatchObject({ name: 'devicemapper', priority: 4, usable: false, code: 'ERR_NOT_SUPPORTED' });
    expect(p.reason).toMatch(/device-mapper|thin-pool/);
    const err = await devicemapperDriver.open(ctx()).then(() => null, (e: unknown) => e);
    expect(isCairnError(err, 'ERR_NOT_SUPPORTED')).toBe(true);
    expect((err as Error).message).toContain(p.reason!);
  });

  test('a bad option makes probe unusable with ERR_INVALID_OPTION', async () => {
    const p = await devicemapperDriver.probe({ ...ctx(), options: { 'dm.fs': 'zfs' } });
    expect(p).toMatchObject({ usable: false, code: 'ERR_INVALID_OPTION' });
  });

  test('hasLayers is false for a home that does not exist', async () => {
    expect(await devicemapperDriver.hasLayers(ctx())).toBe(false);
  });
});
