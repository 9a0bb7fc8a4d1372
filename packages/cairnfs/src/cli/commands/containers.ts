// Container commands: create, ps, mount, umount, changes, diff, commit, rm.
import type { Command } from 'commander';
import type { ContainerInfo, LayerStore } from '@cairnfs/image';
import { cacheIdOf, cliMount, withStore } from '../context.js';
import { formatOf, formatOption, listingOptions, printJson, printList, shortId } from '../output.js';
import { checkTarDestination, OUTPUT_FLAGS, writeTar } from '../tar-output.js';

/** The image a container was made from, as people name it: its first tag, else its short id. */
const imageName = (store: LayerStore, c: ContainerInfo) => store.tagsOf(c.image)[0] ?? shortId(c.image);

export function registerContainerCommands(program: Command): void {
  program.command('create').argument('<image>').argument('<name>').description('create a container layer on top of an image')
    .addOption(formatOption())
    .action((image: string, name: string, _o: unknown, cmd: Command) => withStore(cmd, async (store) => {
      const c = await store.createContainer(image, name);
      if (formatOf(cmd) === 'json') printJson(c);
      else process.stdout.write(`${c.name}\n`);
    }));

  listingOptions(program.command('ps').description('list containers'), { quiet: 'print container names only', ids: true })
    .option('-s, --size', 'also show the bytes each container changed (walks its layer)')
    .action((o: { size?: boolean }, cmd: Command) => withStore(cmd, async (store, driver) => {
      const rows: Array<ContainerInfo & { size: number | null }> = [];
      for (const c of store.containers()) {
        rows.push({ ...c, size: o.size ? await driver.diffSize(c.mountId, cacheIdOf(store, c.parent)) : null });
      }
      printList(cmd, rows, [
        { header: 'name', value: (c) => c.name },
        { header: 'image', value: (c) => imageName(store, c) },
        { header: 'mountId', value: (c) => c.mountId, kind: 'id' },
        ...(o.size ? [{ header: 'size', value: (c: { size: number | null }) => c.size, kind: 'bytes' as const }] : []),
      ], (c) => ({ name: c.name, image: c.image, imageTags: store.tagsOf(c.image), mountId: c.mountId, parent: c.parent, size: c.size }),
      (c) => c.name);
    }));

  program.command('mount').argument('<name>').description('mount a container layer and print its root path (stays mounted until `cairn umount`)')
    .action((name: string, _o: unknown, cmd: Command) => withStore(cmd, async (store, driver) => {
      process.stdout.write(`${await driver.get(store.container(name).mountId, cliMount(name))}\n`);
    }));

  program.command('umount').argument('<name>').description('unmount a container layer mounted by `cairn mount`')
    .action((name: string, _o: unknown, cmd: Command) => withStore(cmd, async (store, driver) => { await driver.put(store.container(name).mountId, cliMount(name)); }));

  program.command('changes').argument('<name>').description('paths a container changed (A/C/D)')
    .addOption(formatOption())
    .action((name: string, _o: unknown, cmd: Command) => withStore(cmd, async (store, driver) => {
      const c = store.container(name);
      const changes = await driver.changes(c.mountId, cacheIdOf(store, c.parent));
      if (formatOf(cmd) === 'json') { printJson(changes); return; }
      for (const ch of changes) process.stdout.write(`${{ add: 'A', modify: 'C', delete: 'D' }[ch.kind]} ${ch.path}\n`);
    }));

  program.command('diff').argument('<name>').description("write a container's changes as an OCI layer tar (to -o FILE or a redirected stdout)")
    .option(OUTPUT_FLAGS, 'write the layer tar to this file')
    .action((name: string, o: { output?: string }, cmd: Command) => {
      checkTarDestination(o.output, 'a layer tar');
      return withStore(cmd, async (store, driver) => {
        const c = store.container(name);
        await writeTar(await driver.diff(c.mountId, cacheIdOf(store, c.parent)), o.output);
      });
    });

  program.command('commit').argument('<name>').description("make a new image of a container's layer on top of its image")
    .option('--tag <name:tag>', 'tag the new image')
    .addOption(formatOption())
    .action((name: string, o: { tag?: string }, cmd: Command) => withStore(cmd, async (store) => {
      const img = await store.commitContainer(name, o.tag ? { tag: o.tag } : {});
      if (formatOf(cmd) === 'json') printJson({ id: img.id, tags: img.tags, layers: img.layers.length });
      else process.stdout.write(`${img.id}\n`);
    }));

  program.command('rm').argument('<names...>').description('remove container layers')
    .action((names: string[], _o: unknown, cmd: Command) => withStore(cmd, async (store) => {
      for (const n of names) { await store.removeContainer(n); process.stdout.write(`${n}\n`); }
    }));
}
