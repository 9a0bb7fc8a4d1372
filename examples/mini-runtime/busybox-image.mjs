// Makes a one-layer `docker save` directory from the host's static busybox, so the
// example runs with no registry and no network. Any real `docker save` tarball or OCI
// layout works in its place.
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { packEntries } from 'cairnfs';

export async function makeBusyboxImage(dir, busybox = '/bin/busybox') {
  const binary = await readFile(busybox);
  const mtimeNs = 1_700_000_000_000_000_000n;
  const dirEntry = (name) => ({ header: { name, type: 'dir', mode: 0o755, mtimeNs } });
  const link = (name) => ({ header: { name, type: 'symlink', mode: 0o777, linkname: '/bin/busybox', mtimeNs } });
  const text = (name, body) => ({ header: { name, type: 'file', mode: 0o644, size: body.length, mtimeNs }, body: Buffer.from(body) });
  const entries = [
    dirEntry('bin'), { header: { name: 'bin/busybox', type: 'file', mode: 0o755, size: binary.length, mtimeNs }, body: binary },
    ...['sh', 'ls', 'cat', 'echo', 'rm', 'mkdir', 'date', 'touch'].map((t) => link(`bin/${t}`)),
    dirEntry('etc'), text('etc/motd', 'welcome to the mini runtime\n'), dirEntry('tmp'), dirEntry('var'),
  ];
  const chunks = [];
  for await (const c of packEntries(entries)) chunks.push(c);
  const layer = Buffer.concat(chunks);
  const diffId = `sha256:${createHash('sha256').update(layer).digest('hex')}`;
  const config = Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux', config: { Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: [diffId] }, history: [{ created_by: 'makeBusyboxImage' }],
  }));
  const configName = `${createHash('sha256').update(config).digest('hex')}.json`;
  await mkdir(join(dir, 'layer'), { recursive: true });
  await writeFile(join(dir, 'layer', 'layer.tar'), layer);
  await writeFile(join(dir, configName), config);
  await writeFile(join(dir, 'manifest.json'), JSON.stringify([{ Config: configName, RepoTags: ['busybox:demo'], Layers: ['layer/layer.tar'] }]));
  return dir;
}
