// changes/diffSize: the naive diff of a base layer (a full walk: with no parent only the
// entry types are needed) plus diffSize (an lstat per changed path), vs a `find -printf`
// walk that prints each entry's size and mode (find lstats every entry; it reads no
// xattrs, and neither does changesBetween without a parent).
//
// Linearity: the same two operations on trees of 1/5, 1/2 and all of the walk's files
// (same generator, same bytes per file), reporting CPU µs per entry, so growth that is
// worse than linear shows up as a rising per-entry cost.
import { comparePair } from '../harness.mjs';
import { runReference } from '../env.mjs';
import { cachedInput } from '../inputs.mjs';

async function walkPair({ input, label, pairs, archive }) {
  const results = [];
  results.push(await comparePair({
    name: `changes ${label}: changesBetween`, pairs, referenceName: 'find -printf',
    cairn: () => archive.changesBetween(input.dir, null),
    reference: () => runReference('find', [input.dir, '-printf', '%s %m %U %G %T@ %p\\n']),
  }));
  const changes = await archive.changesBetween(input.dir, null);
  results.push(await comparePair({
    name: `changes ${label}: diffSizeOf`, pairs, referenceName: 'find -printf',
    cairn: () => archive.diffSizeOf(input.dir, changes),
    reference: () => runReference('find', [input.dir, '-printf', '%s %i %n\\n']),
  }));
  for (const r of results) r.entries = changes.length;
  return results;
}

/**
 * The walk at 1/5, 1/2 and all of `input`'s files (the smaller trees at the standard
 * walk's density, 1 MiB per 1,000 files, generated and cached like `input`). Each
 * result carries `entries`, so CPU per entry can be compared across sizes.
 */
export async function changesCases({ input, label, pairs, archive }) {
  const results = [];
  for (const files of [Math.round(input.files / 5), Math.round(input.files / 2)]) {
    const smaller = await cachedInput('walk', { files, totalBytes: Math.round((files / 1000) * 1024 * 1024) });
    results.push(...await walkPair({ input: smaller, label: `${smaller.files} files`, pairs, archive }));
  }
  results.push(...await walkPair({ input, label, pairs, archive }));
  return results;
}
