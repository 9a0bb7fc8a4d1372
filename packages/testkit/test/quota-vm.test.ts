import { describeBackend, runJestInVm, vmMissingReason } from '@cairnfs/testkit';

// This host's kernel has no xfs quota code (CONFIG_XFS_QUOTA unset), so the overlay2, vfs
// and core quota tests run in one boot of the test VM (scripts/run-in-vm.sh: Debian's 6.1
// kernel), as one in-band jest run of each package's test/vm/quota.vmtest.ts; this test
// reports its result. It lives in testkit because it spans packages; it imports none of
// their test files, it only names them for the guest's jest.
// Only tests whose name has the word "quota" run there (the conformance suites' quota
// scenario, not their other ~25 tests, which the host already runs): under emulation each
// test costs seconds. CAIRN_QUOTA_VM_FILTER overrides the filter: with '.' all 54 tests (both
// full conformance suites on xfs prjquota) passed in the guest in 190 s of jest time.
const FILES = ['core', 'overlay2', 'vfs'].map((pkg) => `packages/${pkg}/test/vm/quota.vmtest.ts`);
const VM_SECONDS = Number(process.env.CAIRN_QUOTA_VM_TIMEOUT ?? 300);

describeBackend('vm', vmMissingReason(), () => {
  test('xfs project quotas for overlay2, vfs and core pass inside the VM (loop xfs mounted prjquota)', async () => {
    const run = await runJestInVm(FILES, { timeoutSeconds: VM_SECONDS, filter: process.env.CAIRN_QUOTA_VM_FILTER ?? '\\bquota\\b|storageOpt size' });
     
    console.log(`quota VM suite: exit ${run.code} in ${run.seconds.toFixed(0)} s\n${run.summary}`);
    if (run.code !== 0) {
      throw new Error(`the in-VM quota suite failed (exit ${run.code}):\n${run.stdout.slice(-4000)}\n${run.stderr.slice(-20000)}`);
    }
    // Not skipped: a skip inside the VM would hide a missing backend.
    expect(run.summary).toMatch(new RegExp(`Test Suites:\\s+${FILES.length} passed, ${FILES.length} total`));
    expect(run.summary).toMatch(/Tests:\s+(\d+ skipped, )?\d+ passed, \d+ total/);
    expect(run.summary).not.toMatch(/failed/);
  }, (VM_SECONDS + 60) * 1000);
});
