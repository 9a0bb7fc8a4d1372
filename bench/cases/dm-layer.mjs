// devicemapper per-layer cost on a loop-lvm thin pool: create(child of parent) + get + put
// through the driver vs the same steps by hand: a thin snapshot of the parent's device
// (`dmsetup message create_snap`), its table made live, a mount and an unmount, the device
// removed. This host's kernel has no device-mapper, so the case runs itself inside the
// test VM (scripts/run-in-vm.sh): under software emulation absolute times say little, the
// ratio is of two sides measured in the same guest.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { comparePair } from '../harness.mjs';
import { run } from '../env.mjs';

const NAME = 'devicemapper create+get+put per layer';
// A small ext4 base device keeps mkfs and every mount cheap under emulation.
const OPTIONS = { 'dm.loopdatasize': '1G', 'dm.loopmetadatasize': '32M', 'dm.basesize': '16M', 'dm.fs': 'ext4', 'dm.min_free_space': '0' };

export async function dmCases({ pairs, cairn, dm, vmKit, repo }) {
  const missing = dm.kernelMissing();
  if (missing === null) return [await inGuest({ pairs, cairn })];
  const noVm = vmKit.vmMissingReason();
  if (noVm) return [{ name: NAME, skipped: `${missing}; and the test VM is not available: ${noVm}` }];
  const vm = await vmKit.runInVm([process.execPath, join(repo, 'scripts', 'bench.mjs'), '--only', 'dm', '--pairs', String(pairs), '--json'], { timeoutSeconds: 1200 });
  const at = vm.stdout.lastIndexOf('{\n  "machine"');
  if (vm.code !== 0 || at < 0) {
    return [{ name: NAME, skipped: `the run in the VM failed (exit ${vm.code}): ${(vm.stderr || vm.stdout).slice(-1500)}` }];
  }
  const inner = JSON.parse(vm.stdout.slice(at, vm.stdout.lastIndexOf('}') + 1));
  return inner.results.map((r) => ({ ...r, name: `${r.name} (in the VM, emulated)` }));
}

async function inGuest({ pairs, cairn }) {
  const root = mkdtempSync(join(tmpdir(), 'cairn-bench-dm-'));
  let driver;
  try {
    driver = await cairn.openDriver({ root, driver: 'devicemapper', options: OPTIONS });
    await driver.create('parent', null);
    await driver.applyDiff('parent', null, cairn.packEntries([{ header: { name: 'etc', type: 'dir', mode: 0o755 } }]));
    const poolName = new Map(await driver.status()).get('Pool Name');
    const parent = await driver.metadata('parent');
    const sectors = Number(parent.DeviceSize) / 512;
    const mnt = join(root, 'reference-mnt');
    mkdirSync(mnt);
    return await comparePair({
      name: NAME, pairs: Math.max(pairs, 10), referenceName: 'dmsetup create_snap + create + mount + umount + remove',
      setup: (side, i) => {
        if (side === 'cairn') return { id: `c${i}`, teardown: () => driver.remove(`c${i}`) };
        const devId = 100000 + i;
        return { devId, dev: `cairn-bench-ref${i}`, teardown: () => run('dmsetup', ['message', poolName, '0', `delete ${devId}`]) };
      },
      cairn: async (ctx) => {
        await driver.create(ctx.id, 'parent');
        await driver.get(ctx.id);
        await driver.put(ctx.id);
      },
      reference: async (ctx) => {
        await run('dmsetup', ['message', poolName, '0', `create_snap ${ctx.devId} ${parent.DeviceId}`]);
        await run('dmsetup', ['create', ctx.dev, '--table', `0 ${sectors} thin /dev/mapper/${poolName} ${ctx.devId}`]);
        await run('dmsetup', ['mknodes', ctx.dev]); // no udev in the guest (the driver does the same)
        await run('mount', ['-t', 'ext4', `/dev/mapper/${ctx.dev}`, mnt]);
        await run('umount', [mnt]);
        await run('dmsetup', ['remove', ctx.dev]);
      },
    });
  } finally {
    if (driver) {
      await driver.remove('parent').catch(() => undefined);
      await driver.cleanup().catch(() => undefined);
    }
    rmSync(root, { recursive: true, force: true });
  }
}
