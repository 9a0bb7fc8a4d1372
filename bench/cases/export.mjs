// Export: cairn packing a tree as a layer tar vs GNU `tar --format=pax -cf` of the same
// tree, both written to a file on the same filesystem. Like with like: GNU tar's pax
// format writes a PAX header with mtime/atime/ctime for every entry, as cairn writes
// one for each nanosecond mtime. (Writing to /dev/null would let GNU tar skip reading
// file content altogether, so both sides write a real file.)
import { closeSync, openSync, writeSync } from 'node:fs';
import { comparePair } from '../harness.mjs';
import { rmrf, runReference } from '../env.mjs';

/**
 * Writes the stream to a file with plain writeSync calls, as tar writes its output. (A
 * createWriteStream pipeline measured ~100 ms more per 50 MB on this machine, spent in
 * Node's async write path, which is the consumer's cost, not export's.)
 */
export async function writeTo(stream, file) {
  const fd = openSync(file, 'w');
  try {
    for await (const chunk of stream) {
      for (let off = 0; off < chunk.length;) off += writeSync(fd, chunk, off);
    }
  } finally {
    closeSync(fd);
  }
}

export async function exportCases({ input, base, label, pairs, archive, cairn }) {
  const results = [];
  // The change list of a base layer: every path is an addition.
  const changes = await archive.changesBetween(input.dir, null);
  const { mkdirSync } = await import('node:fs');
  mkdirSync(base, { recursive: true });
  const out = (side, i) => {
    const file = `${base}/export-${side}-${i}.tar`;
    return { file, teardown: () => rmrf(file) };
  };
  results.push(await comparePair({
    name: `export ${label}: exportChanges`, pairs, referenceName: 'tar -cf (pax)',
    setup: out,
    cairn: (ctx) => writeTo(archive.exportChanges(input.dir, changes), ctx.file),
    reference: (ctx) => runReference('tar', ['--format=pax', '-C', input.dir, '-cf', ctx.file, '.']),
  }));

  // Like with like for xattrs: cairn must read every entry's xattrs (llistxattr per
  // entry); GNU tar reads none unless told to with --xattrs.
  results.push(await comparePair({
    name: `export ${label}: exportChanges`, pairs, referenceName: 'tar -cf (pax, --xattrs)',
    setup: out,
    cairn: (ctx) => writeTo(archive.exportChanges(input.dir, changes), ctx.file),
    reference: (ctx) => runReference('tar', ['--format=pax', '--xattrs', '-C', input.dir, '-cf', ctx.file, '.']),
  }));

  // Through the vfs driver: diff() of a base layer walks it and packs it.
  const driver = await cairn.openDriver({ root: `${base}/root-export-vfs`, driver: 'vfs' });
  const { createReadStream } = await import('node:fs');
  await driver.create('exported', null);
  await driver.applyDiff('exported', null, createReadStream(input.tar));
  const layerDir = (await driver.get('exported'));
  results.push(await comparePair({
    name: `export ${label}: vfs diff`, pairs, referenceName: 'tar -cf (pax)',
    setup: out,
    cairn: async (ctx) => writeTo(await driver.diff('exported', null), ctx.file),
    reference: (ctx) => runReference('tar', ['--format=pax', '-C', layerDir, '-cf', ctx.file, '.']),
  }));
  await driver.put('exported');
  await driver.remove('exported');
  await driver.cleanup();
  return results;
}
