// Rootless, as a real unprivileged user with /etc/subuid ranges, through `cairn unshare`
// (newuidmap/newgidmap): the namespace it makes, a multi-user image imported, mounted,
// diffed and exported by the CLI on vfs and overlay2, and the driver conformance suites
// (packages/testkit/rootless/conformance.rootlesstest.mjs) run inside it.
import { execFileSync } from 'node:child_process';
import { chmodSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { chown, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ROOTLESS_REPO, describeBackend, ensureRootlessUser, multiUserLayerTar, packedTarOf, rootlessMissingReason, runJestRootless,
  runRootless, sampleLayers, writeDockerSave,
} from '@cairnfs/testkit';

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

  for (const driver of ['vfs', 'overlay2']) {
    test(`${driver}: the CLI imports a multi-user image with a device, mounts, diffs and exports it rootless; the layers come back byte for byte`, async () => {
      const user = ensureRootlessUser();
      const dir = await mkdtemp('/tmp/cairn-rootless-cli-');
      try {
        const device = await packedTarOf([
          { header: { name: 'dev', type: 'dir', mode: 0o755 } },
          { header: { name: 'dev/null', type: 'char', mode: 0o666, devmajor: 1, devminor: 3 } },
          { header: { name: 'dev/sda', type: 'block', mode: 0o660, uid: 0, gid: 6, devmajor: 8, devminor: 0 } },
        ]);
        const layers = [await multiUserLayerTar(), device, (await sampleLayers())[1]!];
        await writeDockerSave(join(dir, 'img'), layers, 'rl:1');
        await mkdir(join(dir, 'out'));
        await chown(join(dir, 'out'), user.uid, user.gid);
        execFileSync('chmod', ['-R', 'a+rX', dir]);
        const cli = `node ${ROOTLESS_REPO}/packages/cairnfs/dist/cli/main.js --driver ${driver} --root "$R"`;
        const script = [
          'set -e', 'R=$(mktemp -d)',
          `${cli} import ${dir}/img >/dev/null`,
          `${cli} create rl:1 c >/dev/null`,
          `P=$(${cli} mount c)`,
          '(cd "$P" && stat -c "%u:%g %F %n" var/www/index.html nobody usr/sbin/daemon dev/null)',
          'echo page > "$P/var/www/new.html" && chown 33:33 "$P/var/www/new.html" && rm "$P/nobody"',
          `${cli} diff c > ${dir}/out/diff.tar`,
          `${cli} export rl:1 > ${dir}/out/save.tar`,
          // The mount lasts until umount (issue 16), whatever other commands open the root meanwhile.
          `${cli} umount c`,
          'rm -rf "$R"',
        ].join('\n');
        const r = await runRootless(['sh', '-c', script]);
        expect(r.code).toBe(0);
        // The devices could not be made; the import says so, and they stay recorded.
        expect(r.stderr).toMatch(/\[CAIRN_DEVICES_RECORDED\] Warning: .*2 device node\(s\) cannot be made without real root.*first: dev\/null/);
        expect(r.stderr).not.toMatch(/cairn: ERR_/);
        // Inside the namespace the owners are the image's own; the device is a placeholder file.
        expect(r.stdout.trim().split('\n')).toEqual([
          '33:33 regular file var/www/index.html', '65534:65534 regular file nobody', '1:1 regular file usr/sbin/daemon',
          '0:0 regular empty file dev/null']);
        const diff = execFileSync('tar', ['-tvf', join(dir, 'out', 'diff.tar'), '--numeric-owner'], { encoding: 'utf8' });
        expect(diff).toMatch(/ 33\/33 .* var\/www\/new\.html/);
        expect(diff).toMatch(/\.wh\.nobody/);
        // The exported image carries every layer exactly as imported (devices and owners included).
        const save = join(dir, 'save');
        await mkdir(save);
        execFileSync('tar', ['-xf', join(dir, 'out', 'save.tar'), '-C', save]);
        const manifest = JSON.parse(await readFile(join(save, 'manifest.json'), 'utf8')) as Array<{ Layers: string[] }>;
        const sums = await Promise.all(manifest[0]!.Layers.map(async (l) => createHash('sha256').update(await readFile(join(save, l))).digest('hex')));
        expect(sums).toEqual(layers.map((l) => createHash('sha256').update(l).digest('hex')));
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  }

  test('doctor, run as the user inside and outside the namespace, reports the ranges and tools', async () => {
    const r = await runRootless(['node', `${ROOTLESS_REPO}/packages/cairnfs/dist/cli/main.js`, '--root', '/tmp/cairn-rootless-doctor', 'doctor'], { unshare: false });
    expect(r.stdout).toMatch(/ok +newuidmap: \S+ \(setuid\)/);
    expect(r.stdout).toMatch(/ok +\/etc\/subuid for cairn-rootless: \d+:\d+/);
    expect(r.stdout).toMatch(/overlay in a user namespace: works/);
  });

  test('the driver conformance suites of vfs, overlay2 and overlay2 on fuse-overlayfs pass rootless', async () => {
    // fuse-overlayfs needs /dev/fuse open to the user; 0666 is the usual default, 0600 on some fresh machines.
    if ((statSync('/dev/fuse').mode & 0o006) !== 0o006) chmodSync('/dev/fuse', 0o666);
    const run = await runJestRootless(['packages/testkit/rootless/conformance.rootlesstest.mjs'], { timeoutSeconds: 900 });
    if (run.code !== 0) console.log(run.stderr.slice(-20000));
    expect(run.summary).toMatch(/Tests:\s+\d+ passed, \d+ total/);
    expect(run.code).toBe(0);
    for (const variant of ['vfs', 'overlay2', 'overlay2-fuse']) expect(run.stderr).toContain(`${variant} (rootless) driver conformance`);
  }, 1_000_000);
});
