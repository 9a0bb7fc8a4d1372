import { rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { DriverHarness, ZfsFuseFixture } from '@cairnfs/testkit';
import { zfsDriver, type ZfsDriver } from '@cairnfs/zfs';

let counter = 0;

/** A conformance harness whose drivers are typed as ZfsDriver, plus the storage root and its dataset. */
export interface ZfsHarness extends Omit<DriverHarness, 'driver' | 'reopen'> {
  driver: ZfsDriver;
  reopen(): Promise<ZfsDriver>;
  root: string;
  dataset: string;
}

/**
 * A fresh storage root for each test: a new dataset `<pool>/r<N>` mounted in the
 * fixture's temp dir, with the driver home `${root}/zfs` on it, as a user would have
 * it. dispose() cleans up every driver it opened, then destroys the dataset and
 * everything under it (layers, snapshots, clones).
 */
export async function zfsHarness(fixture: ZfsFuseFixture, options: Record<string, string> = {}): Promise<ZfsHarness> {
  const { dataset, path: root } = await fixture.newFilesystem(`r${++counter}`);
  const home = join(root, 'zfs');
  const opened: ZfsDriver[] = [];
  const openOne = async () => {
    const d = await openZfs(home, options);
    opened.push(d);
    return d;
  };
  const driver = await openOne();
  return {
    driver,
    root,
    dataset,
    reopen: openOne,
    async dispose() {
      for (const d of opened) await d.cleanup().catch(() => undefined);
      await fixture.zfs('destroy', '-R', dataset).catch(() => undefined);
      await rm(root, { recursive: true, force: true }).catch(() => undefined);
    },
  };
}

/** Opens the zfs driver on `home` as the registry would (options parsed, no lock wait). */
export async function openZfs(home: string, options: Record<string, string> = {}): Promise<ZfsDriver> {
  return await zfsDriver.open({ root: dirname(home), home, options, lockTimeoutMs: 0 }) as ZfsDriver;
}
