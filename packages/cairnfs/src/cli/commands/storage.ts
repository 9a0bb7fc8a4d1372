// Disk use and cleanup: du, gc.
import type { Command } from 'commander';
import type { LayerStore } from '@cairnfs/image';
import type { StorageDriver } from '../../index.js';
import { cacheIdOf, globals, withStore } from '../context.js';
import { formatOf, formatOption, humanBytes, printJson, printTable, shortId } from '../output.js';

/**
 * Where the bytes are, each counted once: image layers (an image's size splits into what
 * it shares with other images and what is its own), container layers, and layers nothing
 * references any more. Reclaimable: image layers no container stands on (`cairn rmi` of
 * the images holding them frees them), every container layer (`cairn rm`; cairn has no
 * notion of a running container), and unreferenced layers (`cairn gc`).
 */
export async function diskUsage(store: LayerStore, driver: StorageDriver) {
  const layers = new Map(store.layers().map((l) => [l.chainId, l]));
  const sizeOf = (chains: Iterable<string>) => [...chains].reduce((a, c) => a + (layers.get(c)?.size ?? 0), 0);
  const ancestry = (chain: string | null): string[] => {
    const out: string[] = [];
    for (let c = chain; c; c = layers.get(c)?.parent ?? null) out.push(c);
    return out;
  };

  const images = store.images();
  const usersOf = new Map<string, number>(); // chain id -> how many images use it
  for (const i of images) for (const l of new Set(i.layers)) usersOf.set(l, (usersOf.get(l) ?? 0) + 1);
  const containers: Array<{ name: string; image: string; size: number }> = [];
  const underContainers = new Set<string>();
  for (const c of store.containers()) {
    for (const l of ancestry(c.parent)) underContainers.add(l);
    containers.push({ name: c.name, image: c.image, size: await driver.diffSize(c.mountId, cacheIdOf(store, c.parent)) });
  }
  const imageItems = images.map((i) => {
    const own = new Set(i.layers);
    const shared = sizeOf([...own].filter((l) => (usersOf.get(l) ?? 0) > 1));
    const size = sizeOf(own);
    return { id: i.id, tags: i.tags, size, shared, unique: size - shared, containers: containers.filter((c) => c.image === i.id).length };
  });
  const imageLayers = new Set(usersOf.keys());
  const unreferenced = [...layers.keys()].filter((l) => !imageLayers.has(l) && !underContainers.has(l));
  const containerBytes = containers.reduce((a, c) => a + c.size, 0);
  const summary = {
    images: {
      total: images.length, active: imageItems.filter((i) => i.containers > 0).length,
      size: sizeOf(imageLayers), reclaimable: sizeOf([...imageLayers].filter((l) => !underContainers.has(l))), items: imageItems,
    },
    containers: { total: containers.length, size: containerBytes, reclaimable: containerBytes, items: containers },
    unreferencedLayers: { total: unreferenced.length, size: sizeOf(unreferenced), reclaimable: sizeOf(unreferenced) },
  };
  const parts = [summary.images, summary.containers, summary.unreferencedLayers];
  return { ...summary, total: { size: parts.reduce((a, p) => a + p.size, 0), reclaimable: parts.reduce((a, p) => a + p.reclaimable, 0) } };
}

export function registerStorageCommands(program: Command): void {
  program.command('du').description('disk use of images, containers and unreferenced layers: shared, unique and reclaimable bytes')
    .option('-v, --verbose', 'also list every image (size, shared, unique) and container')
    .addOption(formatOption())
    .action((o: { verbose?: boolean }, cmd: Command) => withStore(cmd, async (store, driver) => {
      const du = await diskUsage(store, driver);
      if (formatOf(cmd) === 'json') { printJson(du); return; }
      const bytes = (n: number) => (globals(cmd).bytes ? String(n) : humanBytes(n));
      const pct = (part: number, whole: number) => `${bytes(part)} (${whole ? Math.round((100 * part) / whole) : 0}%)`;
      printTable(['type', 'total', 'active', 'size', 'reclaimable'], [
        ['images', String(du.images.total), String(du.images.active), bytes(du.images.size), pct(du.images.reclaimable, du.images.size)],
        ['containers', String(du.containers.total), '', bytes(du.containers.size), pct(du.containers.reclaimable, du.containers.size)],
        ['unreferenced layers', String(du.unreferencedLayers.total), '', bytes(du.unreferencedLayers.size), pct(du.unreferencedLayers.reclaimable, du.unreferencedLayers.size)],
        ['total', '', '', bytes(du.total.size), pct(du.total.reclaimable, du.total.size)],
      ]);
      if (!o.verbose) return;
      process.stdout.write('\n');
      printTable(['image', 'tags', 'size', 'shared', 'unique', 'containers'], du.images.items.map((i) =>
        [shortId(i.id), i.tags.join(',') || '<none>', bytes(i.size), bytes(i.shared), bytes(i.unique), String(i.containers)]));
      process.stdout.write('\n');
      printTable(['container', 'image', 'size'], du.containers.items.map((c) => [c.name, store.tagsOf(c.image)[0] ?? shortId(c.image), bytes(c.size)]));
    }));

  program.command('gc').description('remove untagged unused images and what interrupted operations left')
    .addOption(formatOption())
    .action((_o: unknown, cmd: Command) => withStore(cmd, async (store) => {
      const r = await store.gc();
      if (formatOf(cmd) === 'json') printJson(r);
      else process.stdout.write(`removed ${r.imagesRemoved.length} images, ${r.layersRemoved.length} layers, ${r.orphansRemoved.length} orphaned driver layers\n`);
    }));
}
