import { readFile } from 'node:fs/promises';

export { writeFileAtomic } from '@cairnfs/core';

/** A small file written by {@link writeFileAtomic} (or by moby), trimmed; undefined when missing. */
export async function readSmall(path: string): Promise<string | undefined> {
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}
