import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { DriverHarness, ZfsFuseFixture } from '@cairnfs/testkit';
import { ZfsDriver } from '@cairnfs/zfs';
import type { ZfsOpenOptions } from '@cairnfs/zfs';

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
export async function zfsHarness(fixture: ZfsFuseFixture, opts: ZfsOpenOptions = {}): Promise<ZfsHarness> {
  const { dataset, path: root } = await fixture.newFilesystem(`r${++counter}`);
  const home = join(root, 'zfs');
  const opened: ZfsDriver[] = [];
  const openOne = async () => {
    const d = await ZfsDriver.open(home, opts);
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
