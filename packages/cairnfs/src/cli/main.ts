#!/usr/bin/env node
// The `cairn` command: one subcommand per verb of the layer store and the driver.
// Every command opens the driver, does one thing, and releases it (except `mount`,
// which must leave its mount in place for `umount` in a later process to find).
import { pipeline } from 'node:stream/promises';
import { dirname, resolve } from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { join } from 'node:path';
import { cp, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { CairnError, ROOTLESS_UID_ENV, defaultRegistry, openDriver, probe, rootlessReport, userNamespaceCommand, type StorageDriver } from '../index.js';
import { migrate, type LayerRef } from '../migrate.js';
import { LayerStore, exportImage } from '@cairnfs/image';
import { parseByteSize } from '@cairnfs/core';
import { exitCodeOf } from './exit-codes.js';
import { importReporter } from './progress.js';
import { registryCommands } from './registry.js';

interface Globals { root: string; driver?: string; storageOpt: string[]; json?: boolean }

const program = new Command('cairn')
  .description('Container image layers on Docker-grade storage drivers (overlay2, btrfs, vfs, …)')
  .addOption(new Option('--root <dir>', 'storage root (rootless, inside `cairn unshare`: $XDG_DATA_HOME/cairn)').default(defaultRoot()).env('CAIRN_ROOT'))
  .option('--driver <name>', 'storage driver (default: auto-select as moby does)')
  .option('--storage-opt <key=value>', 'driver option, e.g. overlay2.size=10G (repeatable)', (v: string, prev: string[]) => [...prev, v], [] as string[])
  .option('--json', 'machine-readable output')
  .exitOverride()
  .showHelpAfterError();

const globals = (): Globals => program.opts<Globals>();

/** /var/lib/cairn, or for a rootless user (inside `cairn unshare`) a root in their home, as podman does. */
function defaultRoot(): string {
  if (!process.env[ROOTLESS_UID_ENV]) return '/var/lib/cairn';
  return join(process.env.XDG_DATA_HOME || join(homedir(), '.local', 'share'), 'cairn');
}

function options(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of globals().storageOpt) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new CairnError('ERR_INVALID_OPTION', `--storage-opt ${kv}: expected key=value, e.g. overlay2.size=10G`, { subject: kv });
    out[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return out;
}

async function withStore<T>(fn: (store: LayerStore, driver: StorageDriver) => Promise<T>, keepMounts = false): Promise<T> {
  const g = globals();
  const driver = await openDriver({ root: resolve(g.root), options: options(), ...(g.driver ? { driver: g.driver } : {}) });
  try {
    return await fn(await LayerStore.open(driver), driver);
  } finally {
    if (!keepMounts) await driver.cleanup();
  }
}

function print(rows: Array<Record<string, unknown>>, columns: string[]): void {
  if (globals().json) { process.stdout.write(JSON.stringify(rows, null, 2) + '\n'); return; }
  const cells = [columns.map((c) => c.toUpperCase()), ...rows.map((r) => columns.map((c) => String(r[c] ?? '')))];
  const widths = columns.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  for (const r of cells) process.stdout.write(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ') + '\n');
}

const short = (d: string | null | undefined) => (d ? d.slice(7, 19) : '');

function probeCommand(name: string, description: string, withFixes: boolean) {
  program.command(name).description(description).action(async () => {
    const results = await probe({ root: resolve(globals().root), options: options() });
    print(results.map((r) => ({
      driver: r.name, status: r.chosen ? 'chosen' : r.usable ? 'usable' : 'unusable', backingFs: r.backingFs ?? '',
      ...(withFixes || globals().json ? { reason: [r.reason, ...(r.notes ?? [])].filter(Boolean).join('; ') } : {}),
      ...(globals().json ? { code: r.code, prior: r.prior, notes: r.notes ?? [] } : {}),
    })), withFixes ? ['driver', 'status', 'backingFs', 'reason'] : ['driver', 'status', 'backingFs']);
    if (withFixes && !globals().json) {
      process.stdout.write(`\nRootless${process.env[ROOTLESS_UID_ENV] ? ` (running in a user namespace for uid ${process.env[ROOTLESS_UID_ENV]})` : ''}:\n`);
      for (const f of rootlessReport()) process.stdout.write(`  ${f.ok ? 'ok  ' : 'MISS'} ${f.what}: ${f.detail}\n`);
    }
  });
}
probeCommand('probe', 'which driver would be used here', false);
probeCommand('doctor', 'which driver would be used, and why every other was rejected (with what to fix); and what running rootless needs', true);

program.command('unshare').argument('[command...]', 'command to run (default: your shell)')
  .description('run a command as root of a new user namespace mapped with your /etc/subuid and /etc/subgid ranges (newuidmap), like podman unshare')
  .action(async (command: string[]) => {
    const child = await userNamespaceCommand(command, { stdio: 'inherit' });
    const code = await new Promise<number>((resolve) => child.once('exit', (c, signal) => resolve(c ?? (signal ? 128 : 1))));
    process.exitCode = code;
  });

program.command('info').description('status of the driver in use').action(() => withStore(async (store, driver) => {
  const status = await driver.status();
  const rows = [['Storage Driver', driver.name], ['Home', driver.home], ...status,
    ['Images', String(store.images().length)], ['Layers', String(store.layers().length)], ['Containers', String(store.containers().length)]];
  if (globals().json) process.stdout.write(JSON.stringify(Object.fromEntries(rows), null, 2) + '\n');
  else for (const [k, v] of rows) process.stdout.write(`${k}: ${v}\n`);
}));

program.command('import').argument('<path>', 'docker save tarball, OCI archive or OCI layout directory')
  .option('--tag <name:tag>', 'also tag the imported image').option('--sequential', 'apply layers one at a time even on overlay2')
  .option('--max-uncompressed <size>', 'refuse a layer that decompresses to more than this (e.g. 20G; default 64G): a bound against gzip/zstd bombs')
  .description('import an image (layers plain, gzip or zstd; diff ids verified)')
  .action((path: string, o: { tag?: string; sequential?: boolean; maxUncompressed?: string }) => withStore(async (store) => {
    const rep = importReporter();
    try {
      const imgs = await store.importImage(resolve(path), {
        onProgress: rep.onProgress, ...(o.tag ? { tag: o.tag } : {}), ...(o.sequential ? { parallel: false } : {}),
        ...(o.maxUncompressed ? { maxUncompressedBytes: parseByteSize(o.maxUncompressed, '--max-uncompressed') } : {}),
      });
      rep.stop();
      print(imgs.map((i) => ({ id: i.id, tags: i.tags.join(','), layers: i.layers.length })), ['id', 'tags', 'layers']);
    } finally { rep.stop(); }
  }));

program.command('images').description('list images').action(() => withStore(async (store) => {
  print(store.images().map((i) => ({
    id: globals().json ? i.id : short(i.id), tags: globals().json ? i.tags : i.tags.join(',') || '<none>', layers: i.layers.length,
    size: i.layers.reduce((a, l) => a + store.layer(l).size, 0),
  })), ['id', 'tags', 'layers', 'size']);
}));

program.command('layers').description('list layers by chain id').action(() => withStore(async (store) => {
  const j = globals().json;
  print(store.layers().map((l) => ({
    chainId: j ? l.chainId : short(l.chainId), diffId: j ? l.diffId : short(l.diffId), parent: j ? l.parent : short(l.parent),
    size: l.size, refcount: store.refcount(l.chainId), ...(j ? { cacheId: l.cacheId, tarSize: l.tarSize, exact: l.exact } : {}),
  })), ['chainId', 'diffId', 'parent', 'size', 'refcount']);
}));

program.command('create').argument('<image>').argument('<name>').description('create a container layer on top of an image')
  .action((image: string, name: string) => withStore(async (store) => {
    const c = await store.createContainer(image, name);
    process.stdout.write(globals().json ? JSON.stringify(c) + '\n' : `${c.name}\n`);
  }));

program.command('mount').argument('<name>').description('mount a container layer and print its root path (stays mounted until `cairn umount`)')
  .action((name: string) => withStore(async (store, driver) => {
    process.stdout.write(`${await driver.get(store.container(name).mountId)}\n`);
  }, true));

program.command('umount').argument('<name>').description('unmount a container layer')
  .action((name: string) => withStore(async (store, driver) => { await driver.put(store.container(name).mountId); }, true));

const parentCache = (store: LayerStore, name: string) => {
  const c = store.container(name);
  return { c, parent: c.parent ? store.layer(c.parent).cacheId : null };
};

program.command('changes').argument('<name>').description('paths a container changed (A/C/D)').action((name: string) => withStore(async (store, driver) => {
  const { c, parent } = parentCache(store, name);
  const changes = await driver.changes(c.mountId, parent);
  if (globals().json) process.stdout.write(JSON.stringify(changes, null, 2) + '\n');
  else for (const ch of changes) process.stdout.write(`${{ add: 'A', modify: 'C', delete: 'D' }[ch.kind]} ${ch.path}\n`);
}));

program.command('diff').argument('<name>').description("write a container's changes as an OCI layer tar to stdout")
  .action((name: string) => withStore(async (store, driver) => {
    const { c, parent } = parentCache(store, name);
    await pipeline(await driver.diff(c.mountId, parent), process.stdout);
  }));

program.command('export').argument('<images...>').description('write a docker save tarball of images to stdout')
  .action((images: string[]) => withStore(async (store) => { await pipeline(exportImage(store, images), process.stdout); }));

program.command('rm').argument('<names...>').description('remove container layers').action((names: string[]) => withStore(async (store) => {
  for (const n of names) { await store.removeContainer(n); process.stdout.write(`${n}\n`); }
}));

program.command('rmi').argument('<images...>').description('untag/remove images; layers go with their last user').action((refs: string[]) => withStore(async (store) => {
  const out = [];
  for (const r of refs) out.push(await store.removeImage(r));
  if (globals().json) { process.stdout.write(JSON.stringify(out, null, 2) + '\n'); return; }
  for (const r of out) {
    for (const t of r.untagged) process.stdout.write(`Untagged: ${t}\n`);
    if (r.deleted) process.stdout.write(`Deleted: ${r.deleted}\n`);
    for (const l of r.layersRemoved) process.stdout.write(`Deleted layer: ${l}\n`);
  }
}));

program.command('du').description('disk use of layers, images and containers').action(() => withStore(async (store, driver) => {
  const layers = store.layers();
  const rows: Array<Record<string, unknown>> = [
    { kind: 'layers', count: layers.length, bytes: layers.reduce((a, l) => a + l.size, 0) },
    { kind: 'images', count: store.images().length, bytes: store.images().reduce((a, i) => a + i.layers.reduce((b, l) => b + store.layer(l).size, 0), 0) },
  ];
  let cbytes = 0;
  for (const c of store.containers()) cbytes += await driver.diffSize(c.mountId, c.parent ? store.layer(c.parent).cacheId : null);
  rows.push({ kind: 'containers', count: store.containers().length, bytes: cbytes });
  print(rows, ['kind', 'count', 'bytes']);
}));

program.command('gc').description('remove untagged unused images and what interrupted operations left').action(() => withStore(async (store) => {
  const r = await store.gc();
  if (globals().json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
  else process.stdout.write(`removed ${r.imagesRemoved.length} images, ${r.layersRemoved.length} layers, ${r.orphansRemoved.length} orphaned driver layers\n`);
}));

program.command('migrate').description('copy every layer of the store to another driver, keeping ids, parents and contents (resumable)')
  .requiredOption('--to <driver>', 'driver to move to, e.g. overlay2')
  .option('--from <driver>', 'driver to move from (default: the one holding layers under --root)')
  .action(async (o: { to: string; from?: string }) => {
    const root = resolve(globals().root);
    const fromName = o.from ?? globals().driver ?? (await probe({ root, options: options() })).find((r) => r.prior)?.name;
    if (!fromName) throw new CairnError('ERR_INVALID_OPTION', `no driver under ${root} holds layers; pass --from DRIVER`, { subject: root });
    if (fromName === o.to) throw new CairnError('ERR_INVALID_OPTION', `--from and --to are both ${o.to}; pick another target driver`, { subject: o.to });
    // The source is opened without its probe: an aufs store must be readable on kernels
    // that can no longer mount aufs, which is exactly when people migrate away from it.
    const factory = defaultRegistry.get(fromName);
    if (!factory) throw new CairnError('ERR_DRIVER_NOT_FOUND', `no storage driver named ${fromName}`, { subject: fromName });
    const from = await factory.open({ root, home: join(root, fromName), options: options(), lockTimeoutMs: 0 });
    try {
      const to = await openDriver({ root, driver: o.to, options: options() });
      try {
        const layers = await layersFromImageStore(from);
        const r = await migrate(from, to, {
          ...(layers ? { layers } : {}),
          onProgress: (p) => {
            if (!globals().json) process.stderr.write(`[${p.index}/${p.total}] ${p.id} ${p.outcome} (${p.bytes} bytes) ${p.digest.slice(0, 19)}\n`);
          },
        });
        await copyImageStore(root, fromName, o.to);
        if (globals().json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
        else process.stdout.write(`migrated ${r.layers.length} layers from ${fromName} to ${o.to} (${r.copied} copied, ${r.already} already done, ${r.bytes} bytes), each verified.\n` +
          `The ${fromName} store is untouched; remove ${join(root, fromName)} once you are satisfied, or later opens need --driver ${o.to}.\n`);
      } finally {
        await to.cleanup();
      }
    } finally {
      await from.cleanup();
    }
  });

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

registryCommands(program, { withStore: (fn) => withStore((store) => fn(store)), print, json: () => globals().json === true });

for (const cmd of program.commands) cmd.exitOverride().showHelpAfterError();

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0 ? 0 : 2;
  } else {
    const code = (err as { code?: string }).code;
    process.stderr.write(`cairn: ${code && code.startsWith('ERR_') ? `${code}: ` : ''}${(err as Error).message ?? String(err)}\n`);
    process.exitCode = exitCodeOf(err);
  }
}
