// Peak RSS of importImage (issue 19: at most 150 MiB), each import in a child of its own
// (import-child.mjs, which reports VmHWM) so the bench's inputs and results do not count:
// the bench image with plain, gzip and zstd layers, and an image of one large plain layer
// (2 GiB; 0.5 GiB with --quick) of 32 MiB files, written straight into the cache as a
// docker-save tarball. Stores go to a tmpfs; the archives are read from the cache.
import { execFileSync } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { rmrf } from '../env.mjs';
import { cachedImage, withZstd } from './import.mjs';
import { cached } from '../inputs.mjs';

const FILE_BYTES = 32 << 20;
const CHUNK = 1 << 20;

/** A docker-save tarball of one plain layer of `gib` GiB (random, so incompressible), kept in the bench cache. */
function cachedBigLayerImage(gib, archive) {
  return cached(`big-layer-${gib}`, (root) => writeBigLayerImage(root, gib, archive));
}

function writeBigLayerImage(root, gib, archive) {
  const files = Math.max(1, Math.round((gib * 2 ** 30) / FILE_BYTES));
  const layerBytes = files * (512 + FILE_BYTES) + 1024;
  const path = join(root, 'image-plain.tar');
  const fd = openSync(path, 'w');
  try {
    const put = (buf) => writeSync(fd, buf);
    const pad = (n) => { if (n % 512) put(Buffer.alloc(512 - (n % 512))); };
    const mtimeNs = 1_700_000_000n * 1_000_000_000n;
    // The layer first, hashed as it is written: its digest goes in the config after it.
    put(archive.encodeHeader({ name: 'layer0/layer.tar', type: 'file', mode: 0o644, size: layerBytes, mtimeNs }));
    const diff = createHash('sha256');
    const layerPut = (buf) => { diff.update(buf); put(buf); };
    const chunk = Buffer.allocUnsafe(CHUNK);
    for (let f = 0; f < files; f++) {
      layerPut(archive.encodeHeader({ name: `data/blob${f}.bin`, type: 'file', mode: 0o644, size: FILE_BYTES, mtimeNs }));
      for (let off = 0; off < FILE_BYTES; off += CHUNK) layerPut(randomFillSync(chunk));
    }
    layerPut(archive.tarTrailer());
    pad(layerBytes);
    const config = Buffer.from(JSON.stringify({
      architecture: 'amd64', os: 'linux', created: '2023-11-14T22:13:20Z', config: { Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: [`sha256:${diff.digest('hex')}`] },
      history: [{ created: '2023-11-14T22:13:20Z', created_by: 'cairn bench big layer' }],
    }));
    const imageId = `sha256:${createHash('sha256').update(config).digest('hex')}`;
    const manifest = Buffer.from(JSON.stringify([{ Config: `${imageId.slice(7)}.json`, RepoTags: [`cairn-bench/big:${gib}g`], Layers: ['layer0/layer.tar'] }]));
    for (const [name, body] of [[`${imageId.slice(7)}.json`, config], ['manifest.json', manifest]]) {
      put(archive.encodeHeader({ name, type: 'file', mode: 0o644, size: body.length, mtimeNs }));
      put(body);
      pad(body.length);
    }
    put(archive.tarTrailer());
    return { plain: path, bytes: layerBytes, files, imageId };
  } finally {
    closeSync(fd);
  }
}

/** One importImage in a child into a fresh store under `base`: { ms, cpuMs, hwmMiB }. */
function importInChild(archivePath, base) {
  const store = join(base, 'store');
  mkdirSync(store, { recursive: true });
  try {
    const child = fileURLToPath(new URL('./import-child.mjs', import.meta.url));
    return JSON.parse(execFileSync(process.execPath, [child, archivePath, store], { encoding: 'utf8' }));
  } finally {
    rmrf(store);
  }
}

export async function importRssCases({ base, imageParams, gib, archive }) {
  const image = await withZstd(await cachedImage(imageParams), imageParams);
  const big = await cachedBigLayerImage(gib, archive);
  const results = [];
  for (const kind of ['plain', 'gzip', 'zstd']) {
    const r = importInChild(image[kind], base);
    results.push({ name: `peak RSS importing the bench image (${image.files} files, ${kind} layers)`, peakRssMiB: r.hwmMiB, bytes: image.bytes, ms: r.ms, cpuMs: r.cpuMs });
  }
  const r = importInChild(big.plain, base);
  results.push({ name: `peak RSS importing one ${gib} GiB plain layer`, peakRssMiB: r.hwmMiB, bytes: big.bytes, ms: r.ms, cpuMs: r.cpuMs });
  return results;
}
