// changes/diffSize: the naive diff of a base layer (a full walk with lstat and xattr
// reads) plus diffSize, vs a `find -printf` walk that prints each entry's size and mode.
import { comparePair } from '../harness.mjs';
import { run } from '../env.mjs';

export async function changesCases({ input, label, pairs, core }) {
  const results = [];
  results.push(await comparePair({
    name: `changes ${label}: changesBetween`, pairs, referenceName: 'find -printf',
    cairn: () => core.changesBetween(input.dir, null),
    reference: () => run('find', [input.dir, '-printf', '%s %m %U %G %T@ %p\\n']),
  }));
  const changes = await core.changesBetween(input.dir, null);
  results.push(await comparePair({
    name: `changes ${label}: diffSizeOf`, pairs, referenceName: 'find -printf',
    cairn: () => core.diffSizeOf(input.dir, changes),
    reference: () => run('find', [input.dir, '-printf', '%s %i %n\\n']),
  }));
  return results;
}
