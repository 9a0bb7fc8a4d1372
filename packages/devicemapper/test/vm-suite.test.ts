import { join } from 'node:path';
import { describeBackend, repoRoot, runInVm as runVm, vmMissingReason } from '@cairnfs/testkit';

// The devicemapper tests need a kernel with device-mapper, which this host may not have:
// they run inside one VM boot (scripts/run-in-vm.sh), as a single in-band jest run of
// packages/devicemapper/test/vm/*.vmtest.ts (a name the host's jest never matches), and
// this host-side test reports that run's result, so `npm test` covers them.
const VM_SUITE_SECONDS = Number(process.env.CAIRN_DM_VM_TIMEOUT ?? 1800);

describeBackend('devicemapper-vm', vmMissingReason(), () => {
  test('the devicemapper suite passes inside the VM (loop-lvm, direct-lvm, thinpooldev; ext4 and xfs)', async () => {
    const jest = join(repoRoot, 'node_modules', 'jest', 'bin', 'jest.js');
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      CAIRN_REQUIRE_ALL: '1', // in the guest the kernel has device-mapper: a skip would be a bug
      CAIRN_BACKEND_LOG: '',
      NODE_OPTIONS: '--experimental-vm-modules --no-warnings',
      FORCE_COLOR: '0',
    };
    const run = await runVm([
      process.execPath, jest, '--runInBand', '--ci',
      '--roots', '<rootDir>/packages/devicemapper/test/vm',
      '--testMatch', '<rootDir>/packages/devicemapper/test/vm/*.vmtest.ts',
      ...(process.env.CAIRN_DM_VM_FILTER ? ['-t', process.env.CAIRN_DM_VM_FILTER] : []),
    ], { timeoutSeconds: VM_SUITE_SECONDS, env });
    const summary = run.stderr.split('\n').filter((l) => /^(Tests|Test Suites|Time):/.test(l)).join('\n');
     
    console.log(`devicemapper VM suite: exit ${run.code} in ${run.seconds.toFixed(0)} s\n${summary}`);
    if (run.code !== 0) {
      throw new Error(`the in-VM devicemapper suite failed (exit ${run.code}):\n${run.stdout.slice(-4000)}\n${run.stderr.slice(-20000)}`);
    }
    expect(summary).toMatch(/Tests:\s+\d+ passed, \d+ total/);
  }, (VM_SUITE_SECONDS + 60) * 1000);
});
