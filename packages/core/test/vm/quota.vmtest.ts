// core's xfs project quota control, run in the test VM (a kernel with xfs quotas) by
// packages/testkit/test/quota-vm.test.ts, in the same boot as overlay2's and vfs's quota tests.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LayerQuotas, probeXfsProjectQuota, requireXfsProjectQuota } from '@cairnfs/core';
import { xfsGetProjectId, xfsGetProjectLimit, xfsSetProjectId } from '@cairnfs/sys';
import { describeBackend, makeLoopFs } from '@cairnfs/testkit';
import type { LoopFs } from '@cairnfs/testkit';

async function writeError(path: string, bytes: number): Promise<string | null> {
  return writeFile(path, Buffer.alloc(bytes, 1)).then(() => null, (e: unknown) => (e as { code?: string }).code ?? String(e));
}

// Every test name here contains the word "quota": the host launcher filters on it.
describeBackend('xfs-prjquota', null, () => {
  let fs: LoopFs;
  beforeAll(async () => { fs = await makeLoopFs('xfs', { mountOptions: 'prjquota', sizeMiB: 512 }); });
  afterAll(async () => { await fs?.dispose(); });

  describe('core project quota control', () => {

  test('probe on xfs mounted with prjquota is ok and names the mount point', async () => {
    const probe = await probeXfsProjectQuota(join(fs.dir, 'not-yet'));
    expect(probe).toEqual({ ok: true, mountPoint: fs.dir });
  });

  test('ids start at the layers dir project id + 1, and a dir limited to 16M takes 10M but refuses 20M more', async () => {
    const layers = join(fs.dir, 'ids');
    await mkdir(layers);
    await xfsSetProjectId(layers, 500); // as if the admin had put the whole store in project 500
    const q = await requireXfsProjectQuota(fs.dir, 'test', layers);
    await mkdir(join(layers, 'a'));
    expect(await q.setLimit(join(layers, 'a'), 16 << 20)).toBe(501);
    expect(await xfsGetProjectId(join(layers, 'a'))).toBe(501);
    expect(await xfsGetProjectLimit(fs.dir, 501)).toBe(16 << 20);
    // Subdirectories made later inherit the project (PROJINHERIT).
    await mkdir(join(layers, 'a', 'sub'));
    expect(await xfsGetProjectId(join(layers, 'a', 'sub'))).toBe(501);
    expect(await writeError(join(layers, 'a', 'ten'), 10 << 20)).toBeNull();
    expect(['EDQUOT', 'ENOSPC']).toContain(await writeError(join(layers, 'a', 'twenty'), 20 << 20));
    expect(['EDQUOT', 'ENOSPC']).toContain(await writeError(join(layers, 'a', 'sub', 'more'), 1 << 20));
  });

  test('a new control scans existing layer dirs and hands out ids above them (nothing persisted)', async () => {
    const layers = join(fs.dir, 'scan');
    await mkdir(layers);
    for (const [name, id] of [['x', 7], ['y', 42], ['z', 0]] as const) {
      await mkdir(join(layers, name));
      if (id) await xfsSetProjectId(join(layers, name), id);
    }
    const q = await requireXfsProjectQuota(fs.dir, 'test', layers);
    await mkdir(join(layers, 'n1'));
    await mkdir(join(layers, 'n2'));
    const ids = await Promise.all([q.setLimit(join(layers, 'n1'), 1 << 20), q.setLimit(join(layers, 'n2'), 2 << 20)]);
    expect(ids.sort()).toEqual([43, 44]);
  });

  test('LayerQuotas.carryOver puts a staged copy in the layer\'s project; nothing for an unlimited dir', async () => {
    const layers = join(fs.dir, 'carry');
    await mkdir(layers);
    const quotas = new LayerQuotas(fs.dir, layers);
    for (const d of ['lim', 'free', 'stage1', 'stage2']) await mkdir(join(layers, d));
    const id = await quotas.limit(join(layers, 'lim'), 4 << 20, 'lim');
    await quotas.carryOver(join(layers, 'lim'), join(layers, 'stage1'));
    await quotas.carryOver(join(layers, 'free'), join(layers, 'stage2'));
    expect(await xfsGetProjectId(join(layers, 'stage1'))).toBe(id);
    expect(await xfsGetProjectId(join(layers, 'stage2'))).toBe(0);
  });
  });
});
