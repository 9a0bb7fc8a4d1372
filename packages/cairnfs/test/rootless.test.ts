// Rootless, as a real unprivileged user with /etc/subuid ranges, through `cairn unshare`
// (newuidmap/newgidmap): the namespace it makes, a multi-user image imported, mounted,
// diffed and exported by the CLI on vfs and overlay2, and the driver conformance suites
// (packages/testkit/rootless/conformance.rootlesstest.mjs) run inside it.
import { describeBackend, ensureRootlessUser, rootlessMissingReason, runJestRootless, runRootless } from '@cairnfs/testkit';

const missing = rootlessMissingReason();

describeBackend('rootless', missing, () => {
  test('cairn unshare runs the command as root of a namespace mapped with the caller and its subordinate ranges', async () => {
    const user = ensureRootlessUser();
    const r = await runRootless(['sh', '-c', 'id -u; cat /proc/self/uid_map /proc/self/gid_map; echo "rootless=$CAIRN_ROOTLESS_UID"']);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => l.trim().split(/\s+/).join(' '));
    expect(lines[0]).toBe('0');
    expect(lines).toContain(`0 ${user.uid} 1`);
    expect(lines).toContain(`0 ${user.gid} 1`);
    expect(lines.filter((l) => /^1 \d+ \d+$/.test(l))).toHaveLength(2);
    expect(lines).toContain(`rootless=${user.uid}`);
  });

  test('the driver conformance suites of vfs and overlay2 pass rootless', async () => {
    const run = await runJestRootless(['packages/testkit/rootless/conformance.rootlesstest.mjs'], { timeoutSeconds: 900 });
    if (run.code !== 0) console.log(run.stderr.slice(-20000));
    expect(run.summary).toMatch(/Tests:\s+\d+ passed, \d+ total/);
    expect(run.code).toBe(0);
  }, 1_000_000);
});
