// TypeScript consumer (type-checked only, under several module resolutions): the public
// types resolve from the installed packages, and wrong uses are type errors.
import { openDriver, probe, LayerStore, exportImage, migrate, type StorageDriver, type ProbeResult, type ImageInfo, type MigrateResult } from 'cairnfs';
import { CairnError, type ErrorCode } from '@cairnfs/core';
import { fsMount } from '@cairnfs/sys';
import type { Readable } from 'node:stream';

export async function main(): Promise<void> {
  const results: ProbeResult[] = await probe({ root: '/var/lib/cairn' });
  const driver: StorageDriver = await openDriver({ root: '/var/lib/cairn', driver: results[0]!.name });
  const store = await LayerStore.open(driver);
  const images: ImageInfo[] = store.images();
  const tar: Readable = exportImage(store, images.map((i) => i.id));
  const code: ErrorCode = new CairnError('ERR_LOCKED', 'busy').code;
  const moved: MigrateResult = await migrate(driver, driver);
  // @ts-expect-error: a driver option map holds strings
  await openDriver({ root: '/x', options: { 'overlay2.size': 10 } });
  void fsMount; void tar; void code; void moved;
}
