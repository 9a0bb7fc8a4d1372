import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describeBackend, repoRoot, runInVm as runVm, vmMissingReason } from '@cairnfs/testkit';

// Proves scripts/run-in-vm.sh: one boot, the guest kernel has device-mapper thin
// provisioning, the project is shared read-write at its own path, and the command's
// exit status, stdout and stderr come back to the host.
describeBackend('devicemapper-vm', vmMissingReason(), () => {
  test('run-in-vm.sh runs dmsetup and modprobe dm_thin_pool in the guest and returns their output and exit status', async () => {
    const marker = `vm-${process.pid}-${Date.now()}`;
    const script = [
      'set -e',
      'modprobe dm_thin_pool',
      'dmsetup version',
      'dmsetup targets',
      'echo "kernel $(uname -r)"',
      'echo "cwd $PWD"',
      `echo ${marker} > packages/devicemapper/test/.vm-marker`,
      'echo to-stderr >&2',
      'exit 7',
    ].join('\n');
    const run = await runVm(['bash', '-c', script], { timeoutSeconds: 300 });
     
    console.log(`VM round trip (boot, dmsetup, modprobe, power off): ${run.seconds.toFixed(1)} s`);
    expect(run.code).toBe(7);
    expect(run.stdout).toMatch(/Driver version:\s+4\.\d+/);
    expect(run.stdout).toMatch(/^thin-pool\s+v1\.\d+/m);
    expect(run.stdout).toMatch(/^kernel 6\.1\./m);
    expect(run.stdout).toContain(`cwd ${repoRoot}\n`);
    expect(run.stderr).toContain('to-stderr');
    const file = join(repoRoot, 'packages/devicemapper/test/.vm-marker');
    try {
      expect((await readFile(file, 'utf8')).trim()).toBe(marker);
    } finally {
      await rm(file, { force: true });
    }
  }, 400_000);

  test('run-in-vm.sh reports a command that cannot be started as a failure, not success', async () => {
    const run = await runVm(['/nonexistent/command'], { timeoutSeconds: 300 });
    expect(run.code).not.toBe(0);
  }, 400_000);
});
