import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CairnError, LayerQuotas, detectBackingFs, probeXfsProjectQuota, requireXfsProjectQuota } from '@cairnfs/core';
import { describeBackend, loopFsMissing, makeLoopFs } from '@cairnfs/testkit';

// Where quotas cannot work, on this host. Enforcement is tested in the VM
// (test/vm/quota.vmtest.ts, launched by quota-vm.test.ts).

test('probe on a non-xfs temp dir says which filesystem it is and that xfs with prjquota is needed', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-quota-'));
  try {
    const fs = (await detectBackingFs(dir)).name;
    const probe = await probeXfsProjectQuota(join(dir, 'home', 'not-yet'));
    if (fs === 'xfs') return; // this host's tmp is xfs: covered by the xfs block below
    expect(probe.ok).toBe(false);
    expect(!probe.ok && probe.reason).toContain(`the backing filesystem is ${fs}`);
    expect(!probe.ok && probe.reason).toMatch(/prjquota/);
    const err = await new LayerQuotas(dir, dir).limit(dir, 1 << 20, 'layer1').then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(CairnError);
    expect((err as CairnError).code).toBe('ERR_QUOTA_UNSUPPORTED');
    expect((err as CairnError).message).toMatch(/^cannot give layer layer1 a size quota: /);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

describeBackend('xfs', loopFsMissing('xfs'), () => {
  test('xfs mounted without prjquota: ERR_QUOTA_UNSUPPORTED naming the mount point and -o prjquota', async () => {
    const fs = await makeLoopFs('xfs');
    try {
      const err = await requireXfsProjectQuota(join(fs.dir, 'home'), 'overlay2.size').then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(CairnError);
      expect((err as CairnError).code).toBe('ERR_QUOTA_UNSUPPORTED');
      expect((err as CairnError).message).toMatch(/^overlay2\.size: /);
      expect((err as CairnError).message).toContain(`xfs at ${fs.dir} is mounted without project quotas`);
      expect((err as CairnError).message).toMatch(/-o prjquota/);
    } finally {
      await fs.dispose();
    }
  });
});
