#!/usr/bin/env node
// cairn quickstart: build a three-layer image in memory, store it with the driver cairn
// picks for this host, run a "container" layer on top, and look at what changed.
//
//   npm install && npm run demo            (as root: most drivers mount)
//   CAIRN_ROOT=/var/lib/cairn-demo npm run demo
import { openDriver, probe, packEntries } from 'cairnfs';
import { mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { join, resolve } from 'node:path';

const root = resolve(process.env.CAIRN_ROOT ?? '.cairn/quickstart');
const now = BigInt(Date.now()) * 1_000_000n;

// Layer tars as a registry would hand them over: OCI changesets, whiteouts included.
const file = (name, text, mode = 0o644) => ({
  header: { name, type: 'file', mode, size: Buffer.byteLength(text), mtimeNs: now },
  body: Buffer.from(text),
});
const dir = (name, mode = 0o755) => ({ header: { name, type: 'dir', mode, mtimeNs: now } });
const whiteout = (name) => file(name, '', 0o600);

const layers = [
  ['base', [dir('etc'), file('etc/os-release', 'NAME=cairn-demo\n'), file('etc/motd', 'hello\n'),
    dir('app'), dir('app/cache'), file('app/cache/stale.txt', 'old build output\n')]],
  ['app', [dir('app'), file('app/server.js', 'console.log("serving");\n', 0o755),
    dir('etc'), whiteout('etc/.wh.motd')]],                         // delete /etc/motd
  ['config', [dir('app'), dir('app/cache'), whiteout('app/cache/.wh..wh..opq'),   // replace /app/cache wholesale
    file('app/cache/fresh.txt', 'new build output\n'), dir('etc'), file('etc/app.conf', 'port=8080\n')]],
];

await mkdir(root, { recursive: true });
const driver = await openDriver({ root });
console.log(`storage root ${root}: using the ${driver.name} driver (home ${driver.home})`);

try {
  let parent = null;
  for (const [id, entries] of layers) {
    if (await driver.exists(id)) await removeChain(driver, id);
    await driver.create(id, parent);
    const bytes = await driver.applyDiff(id, parent, packEntries(entries));
    console.log(`layer ${id.padEnd(7)} applied ${bytes} bytes of content on top of ${parent ?? '(nothing)'}`);
    parent = id;
  }

  // A container: a writable layer on top of the image.
  await driver.createReadWrite('container', 'config');
  const rootfs = await driver.get('container');
  console.log(`\ncontainer root filesystem mounted at ${rootfs}`);
  console.log(`  /etc:       ${(await readdir(join(rootfs, 'etc'))).sort().join(' ')}`);
  console.log(`  /app/cache: ${(await readdir(join(rootfs, 'app/cache'))).sort().join(' ')}`);
  await writeFile(join(rootfs, 'app/data.json'), '{"visits": 1}\n');
  await rm(join(rootfs, 'etc/app.conf'));
  await writeFile(join(rootfs, 'etc/os-release'), (await readFile(join(rootfs, 'etc/os-release'), 'utf8')) + 'VARIANT=demo\n');
  await driver.put('container');

  console.log('\nchanges made by the container:');
  for (const change of await driver.changes('container')) console.log(`  ${change.kind.padEnd(6)} ${change.path}`);

  const tarPath = join(root, 'container-diff.tar');
  await pipeline(await driver.diff('container'), createWriteStream(tarPath));
  console.log(`\nexported the container's changes as an OCI layer: ${tarPath} (${(await stat(tarPath)).size} bytes)`);

  await driver.remove('container');
  for (const [id] of [...layers].reverse()) await driver.remove(id);
} finally {
  await driver.cleanup();
}

console.log('\nwhy this driver (probe report):');
for (const r of await probe({ root })) {
  const verdict = r.chosen ? 'chosen' : r.usable ? 'usable' : 'not usable';
  console.log(`  ${r.name.padEnd(13)} ${verdict.padEnd(11)}${r.backingFs ? ` on ${r.backingFs}` : ''}${r.reason ? `: ${r.reason}` : ''}`);
}

async function removeChain(d, id) {
  // A previous demo run left layers behind: remove children first.
  const ids = layers.map(([l]) => l);
  for (const l of ['container', ...ids.slice(ids.indexOf(id)).reverse()]) {
    if (await d.exists(l)) await d.remove(l);
  }
}
