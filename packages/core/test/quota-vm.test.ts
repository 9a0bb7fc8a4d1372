import { describeBackend, runJestInVm, vmMissingReason } from '@cairn/testkit';

// This host's kernel has no xfs quota code (CONFIG_XFS_QUOTA unset), so the overlay2, vfs
// and core quota tests run in one boot of the test VM (scripts/run-in-vm.sh: Debian's 6.1
// kernel), as one in-band jest run of their *.vmtest.ts files; this test reports its result.
// Only tests whose name has the word "quota" run there (the conformance suites' quota
// scenario, not their other ~25 tests, which the host already runs): under emulation each
// test costs seconds. CAIRN_QUOTA_VM_FILTER overrides the filter ('.' runs everything).
const FILES = [
  'packages/core/test/vm/quota.vmtest.ts',
  'packages/overlay2/test/vm/quota.vmtest.ts',
  'packages/vfs/test/vm/quota.vmtest.ts',
];
const VM_SECONDS = Number(process.env.CAIRN_QUOTA_VM_TIMEOUT ?? 300);

describeBackend('vm', vmMissingReason(), () => {
  test('xfs project quotas for overlay2, vfs and core pass inside the VM (loop xfs mounted prjquota)', async () => {
    const run = await runJestInVm(FILES, { timeoutSeconds: VM_SECONDS, filter: process.env.CAIRN_QUOTA_VM_FILTER ?? '\\bquota\\b|storageOpt size' });
    // eslint-disable-next-line no-console
    console.log(`quota VM suite: exit ${run.code} in ${run.seconds.toFixed(0)} s\n${run.summary}`);
    if (run.code !== 0) {
      throw new Error(`the in-VM quota suite failed (exit ${run.code}):\n${run.stdout.slice(-4000)}\n${run.stderr.slice(-20000)}`);
    }
    // Three files, none skipped: a skip inside the VM would hide a missing backend.
    expect(run.summary).toMatch(/Test Suites:\s+3 passed, 3 total/);
    expect(run.summary).toMatch(/Tests:\s+(\d+ skipped, )?\d+ passed, \d+ total/);
    expect(run.summary).not.toMatch(/failed/);
  }, (VM_SECONDS + 60) * 1000);
});
