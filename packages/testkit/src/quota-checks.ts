// Checks shared by the drivers' project-quota tests (run in the test VM, whose kernel has
// xfs quotas): writing through a layer until the quota stops it, and the error codes.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError } from '@cairnfs/core';
import { xfsGetProjectId, xfsGetProjectLimit } from '@cairnfs/sys';

/** Writes `bytes` to `path`; null when it worked, else the errno code (EDQUOT, ENOSPC…). */
export async function writeError(path: string, bytes: number): Promise<string | null> {
  return writeFile(path, Buffer.alloc(bytes, 1)).then(() => null, (e: unknown) => (e as { code?: string }).code ?? String(e));
}

/** The CairnError code a promise rejects with (or a note that it rejected with something else). */
export async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  const err = await p.then(() => null, (e: unknown) => e);
  return err instanceof CairnError ? err.code : `not a CairnError: ${String(err)}`;
}

/**
 * Two container layers made with a 16M size each: their project dirs (`projects`) got
 * consecutive project ids with a 16 MiB limit on the xfs at `fsDir`, and through their
 * mounted roots (`roots`) the first takes 10M and refuses 20M more while the second,
 * with its own quota, still takes 10M + 5M.
 */
export async function expectIndependent16MQuotas(fsDir: string, projects: [string, string], roots: [string, string]): Promise<void> {
  const id1 = await xfsGetProjectId(projects[0]);
  expect(id1).toBeGreaterThan(0);
  expect(await xfsGetProjectId(projects[1])).toBe(id1 + 1);
  expect(await xfsGetProjectLimit(fsDir, id1)).toBe(16 << 20);
  expect(await writeError(join(roots[0], 'ten'), 10 << 20)).toBeNull();
  expect(['EDQUOT', 'ENOSPC']).toContain(await writeError(join(roots[0], 'twenty'), 20 << 20));
  expect(await writeError(join(roots[1], 'ten'), 10 << 20)).toBeNull();
  expect(await writeError(join(roots[1], 'five'), 5 << 20)).toBeNull();
}
