import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { builtinDrivers, defaultRegistry, openDriver, probe, vfsDriver } from 'cairnfs';
import type { StorageDriver } from 'cairnfs';

let root: string;
const opened: StorageDriver[] = [];
beforeEach(async () => { root = await mkdtemp(join(tmpdir(), 'cairn-umbrella-')); });
afterEach(async () => {
  for (const d of opened.splice(0)) await d.cleanup();
  await rm(root, { recursive: true, force: true });
});

test('importing cairn registers every built-in driver in the default registry', () => {
  expect(builtinDrivers).toContain(vfsDriver);
  for (const f of builtinDrivers) expect(defaultRegistry.get(f.name)).toBe(f);
  // moby's priority order: overlay2, btrfs, zfs, devicemapper, aufs, vfs
  expect(defaultRegistry.list().map((f) => f.name)).toEqual(['overlay2', 'btrfs', 'zfs', 'devicemapper', 'aufs', 'vfs']);
});

test('probe() without a registry reports the built-in drivers and chooses exactly one', async () => {
  const report = await probe({ root });
  expect(report.map((r) => r.name)).toEqual(defaultRegistry.list().map((f) => f.name));
  expect(report.filter((r) => r.chosen)).toHaveLength(1);
  expect(report.find((r) => r.name === 'vfs')).toMatchObject({ usable: true, backingFs: expect.any(String) });
});

test('openDriver with driver vfs gives a working vfs driver at ${root}/vfs', async () => {
  const driver = await openDriver({ root, driver: 'vfs' });
  opened.push(driver);
  expect(driver.name).toBe('vfs');
  expect(driver.home).toBe(join(root, 'vfs'));
  await driver.create('base');
  expect(await driver.exists('base')).toBe(true);
  expect(await driver.exists('other')).toBe(false);
  await driver.remove('base');
  expect(await driver.exists('base')).toBe(false);
});

test('a vfs store with layers is reopened as vfs by auto-selection (prior driver)', async () => {
  const first = await openDriver({ root, driver: 'vfs' });
  await first.create('layer1');
  await first.cleanup();
  const again = await openDriver({ root });
  opened.push(again);
  expect(again.name).toBe('vfs');
  expect(await again.exists('layer1')).toBe(true);
});

test('a second open of the same home works from the umbrella too, and sees what the first made', async () => {
  const first = await openDriver({ root, driver: 'vfs' });
  opened.push(first);
  const second = await openDriver({ root, driver: 'vfs' });
  opened.push(second);
  await first.create('made-by-first');
  expect(await second.exists('made-by-first')).toBe(true);
  expect(await readdir(root)).toEqual(['vfs']);
});
