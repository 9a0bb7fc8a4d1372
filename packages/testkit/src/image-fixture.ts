// Builds images by hand for the image, CLI and registry tests: layer tars packed with packEntries,
// directory/tarball or an OCI layout, compressed as asked.
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { execFileSync } from 'node:child_process';
import { packEntries, type TarSourceEntry } from '@cairnfs/archive';

export const sha = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export async function tarOf(entries: TarSourceEntry[]): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of packEntries(entries)) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

export const fileEntry = (name: string, content: string | Buffer, mode = 0o644): TarSourceEntry => {
  const body = Buffer.from(content);
  return { header: { name, type: 'file', mode, size: body.length, mtimeNs: 1_700_000_000_123_456_789n }, body };
};
export const dirEntry = (name: string): TarSourceEntry => ({ header: { name, type: 'dir', mode: 0o755 } });

/** Three layers: a base, a change with a whiteout, an opaque dir. */
export async function sampleLayers(): Promise<Buffer[]> {
  return [
    await tarOf([dirEntry('etc'), fileEntry('etc/os-release', 'ID=cairn\n'), fileEntry('etc/motd', 'hello\n'),
      dirEntry('bin'), fileEntry('bin/big', Buffer.alloc(300_000, 7), 0o755)]),
    await tarOf([dirEntry('etc'), { header: { name: 'etc/.wh.motd', type: 'file', mode: 0o644, size: 0 } }, fileEntry('etc/app.conf', 'x=1\n'),
      { header: { name: 'etc/link', type: 'symlink', mode: 0o777, linkname: 'app.conf' } }]),
    await tarOf([dirEntry('app'), { header: { name: 'app/.wh..wh..opq', type: 'file', mode: 0o644, size: 0 } }, fileEntry('app/data.json', '{"a":1}\n')]),
  ];
}

export type Compress = 'none' | 'gzip' | 'zstd';

function compress(b: Buffer, how: Compress): Buffer {
  if (how === 'gzip') return gzipSync(b);
  if (how === 'zstd') return execFileSync('zstd', ['-q', '-c'], { input: b });
  return b;
}

export function configFor(layers: Buffer[], extra: Record<string, unknown> = {}): Buffer {
  return Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: layers.map(sha) }, ...extra }));
}

/** A docker-save layout in `dir` (legacy <id>/layer.tar paths). Returns the image id. */
export async function writeDockerSave(dir: string, layers: Buffer[], tag: string, how: Compress = 'none', config = configFor(layers)): Promise<string> {
  const paths: string[] = [];
  for (const [i, l] of layers.entries()) {
    const p = `layer${i}/layer.tar`;
    await mkdir(join(dir, `layer${i}`), { recursive: true });
    await writeFile(join(dir, p), compress(l, how));
    paths.push(p);
  }
  const id = sha(config);
  await writeFile(join(dir, `${id.slice(7)}.json`), config);
  await writeFile(join(dir, 'manifest.json'), JSON.stringify([{ Config: `${id.slice(7)}.json`, RepoTags: [tag], Layers: paths }]));
  return id;
}

/** An OCI image layout in `dir`. */
export async function writeOciLayout(dir: string, layers: Buffer[], ref: string, how: Compress = 'none'): Promise<string> {
  const blobs = join(dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const put = async (b: Buffer) => { const d = sha(b); await writeFile(join(blobs, d.slice(7)), b); return d; };
  const config = configFor(layers);
  const cfg = await put(config);
  const descs = [];
  for (const l of layers) { const c = compress(l, how); descs.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+' + how, digest: await put(c), size: c.length }); }
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cfg, size: config.length }, layers: descs }));
  const md = await put(manifest);
  await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: md, size: manifest.length, annotations: { 'io.containerd.image.name': ref } }] }));
  return cfg;
}

/** Packs a directory into a tar file with GNU tar (the way a user would). */
export function tarDir(dir: string, out: string): void {
  execFileSync('tar', ['-C', dir, '-cf', out, '.']);
}
