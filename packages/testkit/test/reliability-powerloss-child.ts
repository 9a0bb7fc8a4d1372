/**
 * The traced side of reliability-powerloss.test.ts. Started under strace as
 * `node --import scripts/ts-register.mjs reliability-powerloss-child.ts <driver> <root>`,
 * it makes a few layers with one driver, then imports a two-layer image and makes a
 * container through the image LayerStore on the same driver. The moment each API call
 * resolves it writes `MARK <json>` to stdout with writeSync, so the marker is a write(2)
 * in the trace, ordered against the syscalls the call made.
 */
import { writeSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { packEntries } from '@cairnfs/archive';
import type { DriverFactory } from '@cairnfs/core';
import type { TarSourceEntry } from '@cairnfs/archive';
import { LayerStore } from '@cairnfs/image';

function mark(step: string, data: Record<string, unknown> = {}): void {
  writeSync(1, `MARK ${JSON.stringify({ step, ...data })}\n`);
}

async function tarOf(entries: TarSourceEntry[]): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of packEntries(entries)) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

function file(name: string, content: string): TarSourceEntry {
  const body = Buffer.from(content);
  return { header: { name, type: 'file', mode: 0o644, size: body.length }, body };
}

const sha = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** A docker-save directory with two small layers; returns its path. */
async function writeImage(dir: string): Promise<string> {
  const layers = [
    await tarOf([{ header: { name: 'etc', type: 'dir', mode: 0o755 } }, file('etc/os-release', 'ID=powerloss\n')]),
    await tarOf([{ header: { name: 'app', type: 'dir', mode: 0o755 } }, file('app/run', 'echo hi\n')]),
  ];
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layers.map(sha) } }));
  await mkdir(dir, { recursive: true });
  const configName = `${sha(config).slice(7)}.json`;
  await writeFile(join(dir, configName), config);
  const layerPaths: string[] = [];
  for (const [i, tar] of layers.entries()) {
    await mkdir(join(dir, `l${i}`));
    await writeFile(join(dir, `l${i}`, 'layer.tar'), tar);
    layerPaths.push(`l${i}/layer.tar`);
  }
  await writeFile(join(dir, 'manifest.json'), JSON.stringify([{ Config: configName, RepoTags: ['powerloss:latest'], Layers: layerPaths }]));
  return dir;
}

async function main(): Promise<void> {
  const [name, root] = [process.argv[2], process.argv[3]];
  if (!name || !root) throw new Error('usage: reliability-powerloss-child.ts <driver> <root>');
  const factory = ((await import(`@cairnfs/${name}`)) as Record<string, unknown>)[`${name}Driver`] as DriverFactory;
  const source = await writeImage(join(root, 'source'));
  const driver = await factory.open({ root, home: join(root, name), options: {}, lockTimeoutMs: 5000 });
  mark('open');
  const tar = await tarOf([file('hello', 'power loss\n')]);
  await driver.create('base', null);
  mark('create', { id: 'base' });
  await driver.applyDiff('base', null, Readable.from([tar]));
  mark('applyDiff', { id: 'base' });
  await driver.create('child', 'base');
  mark('create', { id: 'child' });
  await driver.applyDiff('child', 'base', Readable.from([await tarOf([file('child', 'second\n')])]));
  mark('applyDiff', { id: 'child' });
  await driver.createReadWrite('rw', 'child');
  mark('createReadWrite', { id: 'rw' });

  const store = await LayerStore.open(driver);
  mark('storeOpen', { dir: store.dir });
  const [image] = await store.importImage(source);
  const layers = image!.layers.map((chainId) => ({ chainId, cacheId: store.layer(chainId).cacheId }));
  mark('importImage', { image: image!.id, layers });
  const container = await store.createContainer('powerloss:latest', 'box');
  mark('createContainer', { name: container.name, mountId: container.mountId });
  await driver.cleanup();
  mark('done');
}

main().catch((err: unknown) => {
  writeSync(2, `powerloss child: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
