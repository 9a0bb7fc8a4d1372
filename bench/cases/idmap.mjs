// Id-mapped containers and rootless import.
//
// 1. Creating and mounting a container with an id map on the bench image (5 layers): the
//    id-mapped `get` (overlay2, lowers through id-mapped mounts) and the chown-copy
//    fallback (what users get without id-mapped mounts: a copy of the image's view with
//    every owner shifted; each timed round uses a map not seen before, so a copy is made),
//    both against an ordinary `get` of a container on the same image in the same run. At
//    20k and 100k files, to show which cost grows with the image; and on a 128-layer
//    stack of one-file layers, to show what grows with the depth.
// 2. Importing the bench image rootless (as an unprivileged user inside `cairn unshare`,
//    newuidmap with /etc/subuid ranges) vs the same import as real root, both in a child
//    process that times only importImage, on the same filesystem, alternating.
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { comparePair, summarize } from '../harness.mjs';
import { cachedImage } from './import.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const shift = (base) => ({ uidMap: [{ containerId: 0, hostId: base, size: 65536 }], gidMap: [{ containerId: 0, hostId: base, size: 65536 }] });

async function storeWithImage({ cairn, image, root, archive, options }) {
  const driver = await cairn.openDriver({ root, driver: 'overlay2', options });
  const store = await image.LayerStore.open(driver);
  const [img] = await store.importImage(archive);
  const top = store.layer(img.layers[img.layers.length - 1]).cacheId;
  await store.close(); // the rounds use the driver alone
  return { driver, top };
}

/**
 * `mounts`: id-mapped vs plain create+get+put at each file count and on 128 layers (a few
 * seconds); `copies`: the chown-copy fallback vs plain (minutes at 100k files).
 */
export async function idmapGetCases({ base, pairs, cairn, image, imageParams, fileCounts, mounts = true, copies = true }) {
  const results = [];
  for (const files of fileCounts) {
    const img = await cachedImage({ ...imageParams, files });
    const label = `${files} files`;
    let n = 0;
    const fresh = async (driver, top) => {
      const id = `c${n++}`;
      await driver.createReadWrite(id, top);
      return id;
    };
    // id-mapped mounts vs plain, one store.
    if (mounts) {
      const { driver, top } = await storeWithImage({ cairn, image, root: `${base}/idmap-${files}`, archive: img.plain, options: {} });
      results.push(await comparePair({
        name: `id-mapped create+get+put, ${label}`, pairs: Math.max(pairs, 10), referenceName: 'plain create+get+put',
        cairn: async () => {
          const id = await fresh(driver, top);
          await driver.get(id, { idMappings: shift(100000) });
          await driver.put(id);
        },
        reference: async () => {
          const id = await fresh(driver, top);
          await driver.get(id);
          await driver.put(id);
        },
      }));
      await driver.cleanup();
    }
    // The chown-copy fallback vs plain: a new map each round, so each round copies.
    if (copies) {
      const { driver, top } = await storeWithImage({ cairn, image, root: `${base}/copy-${files}`, archive: img.plain, options: { 'overlay2.idmapped_mounts': 'false' } });
      let map = 1;
      results.push(await comparePair({
        name: `chown-copy create+get+put, ${label}`, pairs: Math.min(pairs, 3), referenceName: 'plain create+get+put',
        cairn: async () => {
          const id = await fresh(driver, top);
          await driver.get(id, { idMappings: shift(100000 + 65536 * map++) });
          await driver.put(id);
        },
        reference: async () => {
          const id = await fresh(driver, top);
          await driver.get(id);
          await driver.put(id);
        },
      }));
      await driver.cleanup();
    }
  }
  // Depth: a container on 128 lowers (one small file each), id-mapped vs plain. What an
  // id-mapped get adds grows with the lowers (their stored maps, the id-mapped mounts), not
  // with the files.
  if (mounts) {
    const depth = 128;
    const driver = await cairn.openDriver({ root: `${base}/idmap-depth`, driver: 'overlay2', options: {} });
    for (let i = 0; i < depth; i++) {
      await driver.createReadWrite(`L${i}`, i === 0 ? null : `L${i - 1}`);
      const root = await driver.get(`L${i}`);
      writeFileSync(join(root, `file-${i}`), String(i));
      await driver.put(`L${i}`);
    }
    let n = 0;
    const round = async (opts) => {
      const id = `c${n++}`;
      await driver.createReadWrite(id, `L${depth - 1}`);
      await driver.get(id, opts);
      await driver.put(id);
    };
    results.push(await comparePair({
      name: `id-mapped create+get+put, ${depth} layers`, pairs: Math.max(pairs, 10), referenceName: 'plain create+get+put',
      cairn: () => round({ idMappings: shift(100000) }),
      reference: () => round({}),
    }));
    await driver.cleanup();
  }
  return results;
}

/** Rootless import vs root import of the bench image (plain layers), importImage timed in a child. */
export async function rootlessImportCases({ pairs, imageParams, testkit }) {
  const missing = testkit.rootlessMissingReason();
  if (missing) return [{ name: 'rootless import', skipped: missing }];
  testkit.ensureRootlessUser();
  const img = await cachedImage(imageParams);
  chmodSync(dirname(img.plain), 0o755); // the bench cache, readable by the test user
  const child = join(here, 'import-child.mjs');
  const rel = child.slice(testkit.repoRoot.length);
  const a = [];
  const b = [];
  const ca = [];
  const cb = [];
  const once = async (rootless) => {
    if (rootless) {
      const r = await testkit.runRootless(['node', `${testkit.ROOTLESS_REPO}${rel}`, img.plain]);
      if (r.code !== 0) throw new Error(`rootless import failed: ${r.stderr}`);
      return JSON.parse(r.stdout.trim().split('\n').pop());
    }
    const dir = mkdtempSync('/tmp/cairn-bench-root-import-');
    try {
      const r = spawnSync(process.execPath, [child, img.plain, dir], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`root import failed: ${r.stderr}`);
      return JSON.parse(r.stdout.trim().split('\n').pop());
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  for (let i = -1; i < pairs; i++) {
    const rl = await once(true);
    const rt = await once(false);
    if (i < 0) continue;
    a.push(rl.ms); ca.push(rl.cpuMs);
    b.push(rt.ms); cb.push(rt.cpuMs);
  }
  execFileSync('sync');
  return [summarize(`rootless import (overlay2, userxattr), ${img.files} files`, 'root import', a, b, ca, cb, pairs)];
}
