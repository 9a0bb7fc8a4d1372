// Images for the registry tests, made here and copied into real registries with skopeo.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { openDriver, defaultRegistry, type StorageDriver } from '@cairnfs/core';
import { overlay2Driver } from '@cairnfs/overlay2';
import { vfsDriver } from '@cairnfs/vfs';
import { LayerStore } from '@cairnfs/image';
import { skopeo, snapshotTree, type RegistryFixture, type TreeSnapshot } from '@cairnfs/testkit';
import { configFor, dirEntry, fileEntry, sha, tarDir, packedTarOf as tarOf, writeDockerSave, writeOciLayout, type Compress } from '@cairnfs/testkit';

for (const f of [vfsDriver, overlay2Driver]) defaultRegistry.register(f);

/** A layer stack different from sampleLayers, marked by `tag` (platform images must differ). */
export async function layersFor(tag: string, bigBytes = 200_000): Promise<Buffer[]> {
  return [
    await tarOf([dirEntry('etc'), fileEntry('etc/os-release', `ID=${tag}\n`), dirEntry('bin'), fileEntry('bin/tool', Buffer.alloc(bigBytes, tag.length), 0o755)]),
    await tarOf([dirEntry('srv'), fileEntry(`srv/${tag}.txt`, `made for ${tag}\n`)]),
  ];
}

/** A docker-save tar of `layers`, pushed to `repoTag` by skopeo (Docker schema 2, gzip layers). Returns the save dir and tar. */
export async function seedDockerArchive(reg: RegistryFixture, work: string, repoTag: string, layers: Buffer[], creds?: { username: string; password: string }) {
  const dir = await mkdtemp(join(work, 'save-'));
  const id = await writeDockerSave(dir, layers, 'seed:1', 'none');
  const tar = `${dir}.tar`;
  tarDir(dir, tar);
  await skopeo(['copy', '-q', ...reg.skopeoFlags('dest', creds), `docker-archive:${tar}`, `docker://${reg.host}/${repoTag}`]);
  return { dir, tar, id };
}

/** An OCI layout (gzip or zstd layers) pushed as is (--preserve-digests, as the notes advise for zstd). */
export async function seedOci(reg: RegistryFixture, work: string, repoTag: string, layers: Buffer[], how: Exclude<Compress, 'none'>) {
  const dir = await mkdtemp(join(work, 'oci-'));
  const id = await writeOciLayout(dir, layers, repoTag, how);
  await skopeo(['copy', '-q', '--preserve-digests', ...reg.skopeoFlags('dest'), `oci:${dir}`, `docker://${reg.host}/${repoTag}`]);
  return { dir, id };
}

export interface PlatformImage { platform: { os: string; architecture: string; variant?: string }; layers: Buffer[] }

/**
 * An OCI layout whose index.json names one image index (ref `multi`) listing one image per
 * platform; pushed with `skopeo copy --all`. Returns the config digest (image id) per platform.
 */
export async function seedMultiPlatform(reg: RegistryFixture, work: string, repoTag: string, images: PlatformImage[]): Promise<Record<string, string>> {
  const dir = await mkdtemp(join(work, 'multi-'));
  const blobs = join(dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const put = async (b: Buffer) => { const d = sha(b); await writeFile(join(blobs, d.slice(7)), b); return d; };
  const ids: Record<string, string> = {};
  const manifests = [];
  for (const img of images) {
    const config = configFor(img.layers, { os: img.platform.os, architecture: img.platform.architecture, ...(img.platform.variant ? { variant: img.platform.variant } : {}) });
    const cfg = await put(config);
    const layers = [];
    for (const l of img.layers) { const z = gzipSync(l); layers.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: await put(z), size: z.length }); }
    const m = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cfg, size: config.length }, layers }));
    manifests.push({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: await put(m), size: m.length, platform: img.platform });
    ids[`${img.platform.os}/${img.platform.architecture}${img.platform.variant ? `/${img.platform.variant}` : ''}`] = cfg;
  }
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests }));
  const indexDigest = await put(index);
  await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.index.v1+json', digest: indexDigest, size: index.length, annotations: { 'org.opencontainers.image.ref.name': 'multi' } }] }));
  await skopeo(['copy', '-q', '--all', '--preserve-digests', ...reg.skopeoFlags('dest'), `oci:${dir}:multi`, `docker://${reg.host}/${repoTag}`]);
  return { ...ids, index: indexDigest };
}

/** A fresh store on `driver` in its own temp root. */
export async function freshStore(driverName = 'overlay2'): Promise<{ root: string; driver: StorageDriver; store: LayerStore; close(): Promise<void> }> {
  const root = await mkdtemp(join(tmpdir(), 'cairn-reg-store-'));
  const driver = await openDriver({ root, driver: driverName });
  const store = await LayerStore.open(driver);
  return { root, driver, store, close: async () => { await store.close(); await driver.cleanup(); await rm(root, { recursive: true, force: true }); } };
}

/** The merged tree of an image, through a container layer made and removed for the look. */
export async function imageTree(s: { driver: StorageDriver; store: LayerStore }, image: string): Promise<TreeSnapshot> {
  const name = `look${Math.random().toString(16).slice(2, 10)}`;
  const c = await s.store.createContainer(image, name);
  try {
    return await snapshotTree(await s.driver.get(c.mountId));
  } finally {
    await s.driver.put(c.mountId);
    await s.store.removeContainer(name);
  }
}

/** Every driver layer id and store file left under a root, for "nothing left behind" checks. */
export async function storeState(s: { driver: StorageDriver; store: LayerStore }): Promise<{ layers: number; images: number; driverLayers: string[] }> {
  const { readdir } = await import('node:fs/promises');
  const home = s.driver.home;
  const driverLayers = (await readdir(home).catch(() => [] as string[])).filter((n) => /^[0-9a-f]{64}$/.test(n));
  return { layers: s.store.layers().length, images: s.store.images().length, driverLayers };
}
