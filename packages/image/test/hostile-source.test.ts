// Hostile image sources (issue 13, findings 7, 8, 10 and the symlinked layer.tar):
// directory sources must not follow links out of the image or open fifos and devices;
// nested OCI indexes must not fan out without end; tags must not pose as image ids.
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CairnError, defaultRegistry, openDriver, type StorageDriver } from '@cairnfs/core';
import { encodeHeader, tarTrailer } from '@cairnfs/archive';
import { overlay2Driver } from '@cairnfs/overlay2';
import { LayerStore, isValidTag } from '@cairnfs/image';
import { configFor, fileEntry, sha, tarDir, packedTarOf as tarOf, writeDockerSave, writeOciLayout } from '@cairnfs/testkit';
import { cpuMsSince } from './hostile.js';

defaultRegistry.register(overlay2Driver);

/** Resolves to the promise's error (undefined if it fulfilled); fails the test after `ms` (a hang). */
async function errorOf(p: Promise<unknown>, ms = 10_000): Promise<CairnError> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`still running after ${ms} ms`)), ms); });
  try {
    await Promise.race([p, hang]);
  } catch (err) {
    if (err instanceof Error && err.message.startsWith('still running')) throw err;
    return err as CairnError;
  } finally { clearTimeout(timer); }
  throw new Error('expected a failure, the call succeeded');
}

describe('hostile image sources (overlay2)', () => {
  let root: string;
  let work: string;
  let driver: StorageDriver;
  let store: LayerStore;
  let layer: Buffer;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'cairn-hsrc-'));
    work = await mkdtemp(join(tmpdir(), 'cairn-hsrc-work-'));
    driver = await openDriver({ root, driver: 'overlay2' });
    store = await LayerStore.open(driver);
    layer = await tarOf([fileEntry('a', 'content of a\n')]);
  });
  afterEach(async () => {
    await driver.cleanup();
    await rm(root, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  /** A docker-save directory whose config file the test then replaces. */
  async function saveWithConfig(name: string): Promise<{ dir: string; configPath: string; config: Buffer }> {
    const dir = join(work, name);
    const config = configFor([layer]);
    const id = await writeDockerSave(dir, [layer], 'demo:1', 'none', config);
    return { dir, configPath: join(dir, `${id.slice(7)}.json`), config };
  }

  describe('directory sources (finding 10)', () => {
    test('a Config symlinked to a host file is refused, not read and stored', async () => {
      const { dir, configPath, config } = await saveWithConfig('cfg-link');
      const host = join(work, 'host-secret.json'); // outside the image directory
      await writeFile(host, config);
      await unlink(configPath);
      await symlink(host, configPath);
      const err = await errorOf(store.importImage(dir));
      expect(err).toBeInstanceOf(CairnError);
      expect(err.code).toBe('ERR_UNSAFE_ARCHIVE');
      expect(err.message).toMatch(/symlink.*inside the image directory/);
      expect(store.images()).toEqual([]);
    });

    test('a Config that is a fifo is refused at once, the import does not hang', async () => {
      const { dir, configPath } = await saveWithConfig('cfg-fifo');
      await unlink(configPath);
      execFileSync('mkfifo', [configPath]);
      const err = await errorOf(store.importImage(dir), 5_000);
      expect(err.code).toBe('ERR_UNSAFE_ARCHIVE');
      expect(err.message).toMatch(/is a fifo, not a regular file/);
    });

    test('an OCI layout whose layer blob links to a host file (absolute or climbing) is refused', async () => {
      const dir = join(work, 'oci');
      await writeOciLayout(dir, [layer], 'demo:1');
      const blob = join(dir, 'blobs/sha256', sha(layer).slice(7));
      const host = join(work, 'host-layer.tar');
      await writeFile(host, layer);
      for (const target of [host, '../../../host-layer.tar']) {
        await unlink(blob);
        await symlink(target, blob);
        const err = await errorOf(store.importImage(dir));
        expect(err.code).toBe('ERR_UNSAFE_ARCHIVE');
        expect(store.layers()).toEqual([]);
      }
    });

    test('a layer.tar linked to another copy inside the image directory imports (docker save writes these)', async () => {
      const dir = join(work, 'dup');
      await writeDockerSave(dir, [layer, layer], 'dup:1');
      await unlink(join(dir, 'layer1/layer.tar'));
      await symlink('../layer0/layer.tar', join(dir, 'layer1/layer.tar'));
      const [img] = await store.importImage(dir);
      expect(img!.layers).toHaveLength(2);
    });

    test('a manifest.json past the JSON size cap is refused before it is read', async () => {
      const dir = join(work, 'bigjson');
      await mkdir(dir);
      await writeFile(join(dir, 'manifest.json'), Buffer.concat([Buffer.alloc(17 << 20, 0x20), Buffer.from('[]')]));
      const err = await errorOf(store.importImage(dir));
      expect(err.code).toBe('ERR_INVALID_ARCHIVE');
      expect(err.message).toMatch(/more than the \d+ bytes a manifest or config may have/);
    });
  });

  describe('symlinked layer.tar in a docker-save tarball', () => {
    test('a duplicate layer.tar that is a symlink to the first copy imports', async () => {
      const dir = join(work, 'dup');
      await writeDockerSave(dir, [layer, layer], 'dup:1');
      await unlink(join(dir, 'layer1/layer.tar'));
      await symlink('../layer0/layer.tar', join(dir, 'layer1/layer.tar'));
      const tar = join(work, 'dup.tar');
      tarDir(dir, tar);
      const [img] = await store.importImage(tar);
      expect(img!.layers).toHaveLength(2);
      expect(img!.tags).toEqual(['dup:1']);
    });

    test('a layer.tar symlink that climbs out of the archive resolves inside it only (and is missing there)', async () => {
      const dir = join(work, 'climb');
      await writeDockerSave(dir, [layer], 'climb:1');
      await unlink(join(dir, 'layer0/layer.tar'));
      await symlink(`../../../../../../..${join(work, 'host-layer.tar')}`, join(dir, 'layer0/layer.tar'));
      await writeFile(join(work, 'host-layer.tar'), layer);
      const tar = join(work, 'climb.tar');
      tarDir(dir, tar);
      const err = await errorOf(store.importImage(tar));
      expect(err.code).toBe('ERR_INVALID_ARCHIVE');
      expect(err.message).toMatch(/does not contain/);
      expect(store.layers()).toEqual([]);
    });
  });

  test('an image tarball with a 10 MiB PAX header (10x the cap) is refused before it is read', async () => {
    const body = Buffer.alloc(10 << 20, 0x41);
    const tar = Buffer.concat([encodeHeader({ name: 'PaxHeaders/x', type: 'file', mode: 0o644, size: body.length }), body, tarTrailer()]);
    tar[156] = 0x78; // typeflag 'x'; fix the checksum the type change broke
    tar.fill(0x20, 148, 156);
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += tar[i]!;
    tar.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    const file = join(work, 'pax.tar');
    await writeFile(file, tar);
    const started = process.cpuUsage();
    const err = await errorOf(store.importImage(file));
    expect(cpuMsSince(started)).toBeLessThan(1_000);
    expect(err.code).toBe('ERR_INVALID_ARCHIVE');
    expect(err.message).toMatch(/PAX header of 10485760 bytes/);
  });

  describe('nested OCI indexes (finding 7)', () => {
    /** An OCI layout whose index.json is replaced by `top`; blobs are added with put. */
    async function layout(name: string) {
      const dir = join(work, name);
      await writeOciLayout(dir, [layer], 'demo:1');
      const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; size: number; mediaType: string }> };
      const leaf = { mediaType: index.manifests[0]!.mediaType, digest: index.manifests[0]!.digest, size: index.manifests[0]!.size };
      const put = async (doc: unknown) => {
        const b = Buffer.from(JSON.stringify(doc));
        await writeFile(join(dir, 'blobs/sha256', sha(b).slice(7)), b);
        return { mediaType: 'application/vnd.oci.image.index.v1+json', digest: sha(b), size: b.length };
      };
      const top = async (manifests: unknown[]) => writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests }));
      return { dir, leaf, put, top };
    }

    test('an index listing 100,000 manifests (10x the cap) is refused in well under a second', async () => {
      const { dir, leaf, top } = await layout('flat');
      await top(Array.from({ length: 100_000 }, () => ({ digest: leaf.digest })));
      const started = process.cpuUsage();
      const err = await errorOf(store.importImage(dir));
      expect(cpuMsSince(started)).toBeLessThan(1_000);
      expect(err.code).toBe('ERR_INVALID_ARCHIVE');
      expect(err.message).toMatch(/more than 10000 manifests/);
    });

    test('indexes nested 80 deep (10x the cap) are refused', async () => {
      const { dir, leaf, put, top } = await layout('deep');
      let d: unknown = leaf;
      for (let i = 0; i < 80; i++) d = await put({ schemaVersion: 2, manifests: [d] });
      await top([d]);
      const started = process.cpuUsage();
      const err = await errorOf(store.importImage(dir));
      expect(cpuMsSince(started)).toBeLessThan(1_000);
      expect(err.code).toBe('ERR_INVALID_ARCHIVE');
      expect(err.message).toMatch(/nested more than 8 deep/);
    });

    test('six indexes each listing the next ten times (10^6 paths to one manifest) are walked once each', async () => {
      const { dir, leaf, put, top } = await layout('dag');
      let d: unknown = leaf;
      for (let i = 0; i < 6; i++) d = await put({ schemaVersion: 2, manifests: Array.from({ length: 10 }, () => d) });
      await top([{ ...(d as object), annotations: { 'io.containerd.image.name': 'dag:1' } }]);
      const started = process.cpuUsage();
      const imgs = await Promise.race([store.importImage(dir), new Promise<never>((_, r) => setTimeout(() => r(new Error('still running after 10 s')), 10_000))]);
      expect(cpuMsSince(started)).toBeLessThan(5_000);
      expect(imgs).toHaveLength(1);
      expect(imgs[0]!.tags).toEqual(['dag:1']);
    });
  });

  describe('tags posing as image ids (finding 8)', () => {
    let trusted: string;
    beforeEach(async () => {
      const [t] = await store.importImage(await (async () => { const d = join(work, 'trusted'); await writeDockerSave(d, [layer], 'trusted:1'); return d; })());
      trusted = t!.id;
    });

    async function hostile(repoTags: string[]): Promise<string> {
      const dir = join(work, `hostile-${Math.random().toString(36).slice(2)}`);
      const evil = await tarOf([fileEntry('a', 'evil\n')]);
      await writeDockerSave(dir, [evil], 'x:1', 'none', configFor([evil], { comment: 'evil' }));
      const m = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as Array<{ RepoTags: string[] }>;
      m[0]!.RepoTags = repoTags;
      await writeFile(join(dir, 'manifest.json'), JSON.stringify(m));
      return dir;
    }

    test('an archive tagging itself sha256:<trusted id> is refused; the id still names the trusted image', async () => {
      const err = await errorOf(store.importImage(await hostile([trusted])));
      expect(err.code).toBe('ERR_INVALID_ARCHIVE');
      expect(err.message).toMatch(/not a valid image tag.*read as an image id/);
      const err64 = await errorOf(store.importImage(await hostile([`${trusted.slice(7)}:latest`])));
      expect(err64.code).toBe('ERR_INVALID_ARCHIVE');
      expect(store.image(trusted).id).toBe(trusted);
      expect((await store.createContainer(trusted, 'c1')).image).toBe(trusted);
    });

    test('an archive tagged <12 hex of the trusted id>:latest cannot take that short id: the lookup refuses as ambiguous', async () => {
      const short = trusted.slice(7, 19);
      const [evil] = await store.importImage(await hostile([`${short}:latest`]));
      expect(evil!.id).not.toBe(trusted);
      let err: unknown;
      try { store.image(short); } catch (e) { err = e; }
      expect((err as CairnError).code).toBe('ERR_INVALID_OPTION');
      expect((err as CairnError).message).toMatch(/ambiguous/);
      // Written out as name:tag it is explicitly the tag.
      expect(store.image(`${short}:latest`).id).toBe(evil!.id);
      await expect(store.createContainer(short, 'c1')).rejects.toMatchObject({ code: 'ERR_INVALID_OPTION' });
      expect(store.image(trusted.slice(7)).id).toBe(trusted);
      expect(store.image(trusted.slice(0, 30)).id).toBe(trusted);
    });

    test('caller tags are validated as Docker does', async () => {
      for (const bad of [trusted, trusted.slice(7), 'Upper:1', 'a'.repeat(256), `x:${'t'.repeat(129)}`, 'name@sha256:' + '0'.repeat(64), 'a//b', ':tag', 'x:-lead']) {
        expect(isValidTag(bad)).toBe(false);
        await expect(store.tag(trusted, bad)).rejects.toMatchObject({ code: 'ERR_INVALID_OPTION' });
      }
      await expect(store.importImage(join(work, 'trusted'), { tag: `sha256:${'a'.repeat(64)}` })).rejects.toMatchObject({ code: 'ERR_INVALID_OPTION' });
      for (const good of ['busybox', 'localhost:5000/ns/app:v1.2', 'docker.io/library/busybox:1.36', 'a_b__c-d---e.f:T_1.x', `${'a'.repeat(12)}:latest`]) {
        expect(isValidTag(good)).toBe(true);
        await store.tag(trusted, good);
      }
      expect(store.image('busybox').id).toBe(trusted);
    });

    test('a hijacking tag already in repositories.json (written before validation) is dropped when the store opens', async () => {
      const [evil] = await store.importImage(await hostile(['evil:1']));
      const repos = join(root, 'image', 'overlay2', 'repositories.json');
      const parsed = JSON.parse(await readFile(repos, 'utf8')) as { Repositories: Record<string, Record<string, string>> };
      parsed.Repositories.sha256 = { [trusted]: evil!.id };
      await writeFile(repos, JSON.stringify(parsed));
      const reopened = await LayerStore.open(driver);
      expect(reopened.image(trusted).id).toBe(trusted);
      expect(reopened.tagsOf(evil!.id)).toEqual(['evil:1']);
    });
  });
});
