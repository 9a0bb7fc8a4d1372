// cairn migrate: every layer of the store onto another driver.
import { cp, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Command } from 'commander';
import { LayerStore } from '@cairnfs/image';
import { CairnError, defaultRegistry, migrate, openDriver, probe, type LayerRef, type StorageDriver } from '../../index.js';
import { driverOptions, globals, lockTimeoutMs, rootOf } from '../context.js';
import { formatOf, formatOption, humanBytes, printJson } from '../output.js';
import { migrateReporter } from '../progress.js';

export function registerMigrateCommand(program: Command): void {
  program.command('migrate').description('copy every layer of the store to another driver, keeping ids, parents and contents (resumable)')
    .requiredOption('--to <driver>', 'driver to move to, e.g. overlay2')
    .option('--from <driver>', 'driver to move from (default: the one holding layers under --root)')
    .addOption(formatOption())
    .action(async (o: { to: string; from?: string }, cmd: Command) => {
      const root = rootOf(cmd);
      const options = driverOptions(cmd);
      const fromName = o.from ?? globals(cmd).driver ?? (await probe({ root, options })).find((r) => r.prior)?.name;
      if (!fromName) throw new CairnError('ERR_LAYER_NOT_FOUND', `no driver under ${root} holds layers; pass --from DRIVER`, { subject: root });
      if (fromName === o.to) throw new CairnError('ERR_INVALID_OPTION', `--from and --to are both ${o.to}; pick another target driver`, { subject: o.to });
      // The source is opened without its probe: an aufs store must be readable on kernels
      // that can no longer mount aufs, which is exactly when people migrate away from it.
      const factory = defaultRegistry.get(fromName);
      if (!factory) throw new CairnError('ERR_DRIVER_NOT_FOUND', `no storage driver named ${fromName}`, { subject: fromName });
      const from = await factory.open({ root, home: join(root, fromName), options, lockTimeoutMs: lockTimeoutMs(cmd) });
      try {
        const to = await openDriver({ root, driver: o.to, options, lockTimeoutMs: lockTimeoutMs(cmd) });
        try {
          const layers = await layersFromImageStore(from);
          const rep = migrateReporter(globals(cmd).progress);
          const r = await migrate(from, to, { ...(layers ? { layers } : {}), onProgress: rep.onProgress });
          await copyImageStore(root, fromName, o.to);
          if (formatOf(cmd) === 'json') printJson(r);
          else process.stdout.write(`migrated ${r.layers.length} layers from ${fromName} to ${o.to} (${r.copied} copied, ${r.already} already done, ${humanBytes(r.bytes)}), each verified.\n` +
            `The ${fromName} store is untouched; remove ${join(root, fromName)} once you are satisfied, or later commands need --driver ${o.to}.\n`);
        } finally {
          await to.cleanup();
        }
      } finally {
        await from.cleanup();
      }
    });
}

/** The image store knows every layer's parent (vfs and overlay2 keep none a migration can read); null when there is none. */
async function layersFromImageStore(driver: StorageDriver): Promise<LayerRef[] | null> {
  if (!(await stat(join(dirname(driver.home), 'image', driver.name)).catch(() => null))) return null;
  const store = await LayerStore.open(driver);
  const cacheOf = (chain: string | null) => (chain ? store.layer(chain).cacheId : null);
  return [
    ...store.layers().map((l) => ({ id: l.cacheId, parent: cacheOf(l.parent) })),
    ...store.containers().map((c) => ({ id: c.mountId, parent: cacheOf(c.parent), readWrite: true })),
  ];
}

/** Layer ids survive migration, so the image metadata of the old driver serves the new one as is. */
async function copyImageStore(root: string, from: string, to: string): Promise<void> {
  const src = join(root, 'image', from);
  const dst = join(root, 'image', to);
  if (!(await stat(src).catch(() => null)) || (await stat(dst).catch(() => null))) return;
  await cp(src, dst, { recursive: true, preserveTimestamps: true });
}
