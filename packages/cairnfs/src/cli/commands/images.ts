// Image commands: import, images, layers, export, rmi, tag.
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { exportImage, type ImageInfo, type LayerInfo, type LayerStore } from '@cairnfs/image';
import { parseByteSize } from '@cairnfs/core';
import { globals, withStore } from '../context.js';
import { formatOf, formatOption, listingOptions, printJson, printList, shortId } from '../output.js';
import { importReporter } from '../progress.js';
import { checkTarDestination, OUTPUT_FLAGS, writeTar } from '../tar-output.js';

/** Bytes of an image: each of its layers once. */
const imageSize = (store: LayerStore, i: ImageInfo) => i.layers.reduce((a, l) => a + store.layer(l).size, 0);

export function registerImageCommands(program: Command): void {
  program.command('import').argument('<path>', 'docker save tarball, OCI archive or OCI layout directory')
    .description('import an image (layers plain, gzip or zstd; diff ids verified)')
    .option('--tag <name:tag>', 'also tag the imported image')
    .option('--sequential', 'apply layers one at a time even on overlay2')
    .option('--max-uncompressed <size>', 'refuse a layer that decompresses to more than this (e.g. 20G; default 64G): a bound against gzip/zstd bombs')
    .addOption(formatOption())
    .action((path: string, o: { tag?: string; sequential?: boolean; maxUncompressed?: string }, cmd: Command) => withStore(cmd, async (store) => {
      const limit = o.maxUncompressed ? parseByteSize(o.maxUncompressed, '--max-uncompressed') : undefined;
      const rep = importReporter(globals(cmd).progress);
      let imgs: ImageInfo[];
      try {
        imgs = await store.importImage(resolve(path), {
          onProgress: rep.onProgress, ...(o.tag ? { tag: o.tag } : {}), ...(o.sequential ? { parallel: false } : {}),
          ...(limit !== undefined ? { maxUncompressedBytes: limit } : {}),
        });
      } finally {
        rep.stop();
      }
      printList(cmd, imgs, [
        { header: 'id', value: (i) => i.id, kind: 'id' },
        { header: 'tags', value: (i) => i.tags.join(',') || '<none>' },
        { header: 'layers', value: (i) => i.layers.length },
        { header: 'size', value: (i) => imageSize(store, i), kind: 'bytes' },
      ], (i) => ({ id: i.id, tags: i.tags, layers: i.layers.length, size: imageSize(store, i) }));
    }));

  listingOptions(program.command('images').description('list images'), { quiet: 'print image ids only', ids: true })
    .action((_o: unknown, cmd: Command) => withStore(cmd, async (store) => {
      printList(cmd, store.images(), [
        { header: 'id', value: (i) => i.id, kind: 'id' },
        { header: 'tags', value: (i) => i.tags.join(',') || '<none>' },
        { header: 'layers', value: (i) => i.layers.length },
        { header: 'size', value: (i) => imageSize(store, i), kind: 'bytes' },
      ], (i) => ({ id: i.id, tags: i.tags, layers: i.layers.length, size: imageSize(store, i), diffIds: i.diffIds, chainIds: i.layers }),
      (i) => (cmd.opts().trunc === false ? i.id : shortId(i.id)));
    }));

  listingOptions(program.command('layers').description('list layers by chain id'), { quiet: 'print chain ids only', ids: true })
    .action((_o: unknown, cmd: Command) => withStore(cmd, async (store) => {
      printList<LayerInfo>(cmd, store.layers(), [
        { header: 'chainId', value: (l) => l.chainId, kind: 'id' },
        { header: 'diffId', value: (l) => l.diffId, kind: 'id' },
        { header: 'parent', value: (l) => l.parent, kind: 'id' },
        { header: 'size', value: (l) => l.size, kind: 'bytes' },
        { header: 'refcount', value: (l) => store.refcount(l.chainId) },
      ], (l) => ({ chainId: l.chainId, diffId: l.diffId, parent: l.parent, size: l.size, tarSize: l.tarSize, refcount: store.refcount(l.chainId), cacheId: l.cacheId, exact: l.exact }),
      (l) => l.chainId);
    }));

  program.command('export').argument('<images...>').description('write a docker save tarball of images (to -o FILE or a redirected stdout)')
    .option(OUTPUT_FLAGS, 'write the tarball to this file')
    .action((images: string[], o: { output?: string }, cmd: Command) => {
      checkTarDestination(o.output, 'an image tarball');
      return withStore(cmd, async (store) => { await writeTar(exportImage(store, images), o.output); });
    });

  program.command('rmi').argument('<images...>').description('untag/remove images; layers go with their last user')
    .addOption(formatOption())
    .action((refs: string[], _o: unknown, cmd: Command) => withStore(cmd, async (store) => {
      const out = [];
      for (const r of refs) out.push(await store.removeImage(r));
      if (formatOf(cmd) === 'json') { printJson(out); return; }
      for (const r of out) {
        for (const t of r.untagged) process.stdout.write(`Untagged: ${t}\n`);
        if (r.deleted) process.stdout.write(`Deleted: ${r.deleted}\n`);
        for (const l of r.layersRemoved) process.stdout.write(`Deleted layer: ${l}\n`);
      }
    }));

  program.command('tag').argument('<image>').argument('<tag>', 'name:tag').description('add a tag to an image')
    .action((image: string, tag: string, _o: unknown, cmd: Command) => withStore(cmd, async (store) => { await store.tag(image, tag); }));
}
