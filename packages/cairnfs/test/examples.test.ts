import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { busyboxMissing, describeBackend } from '@cairnfs/testkit';

const run = promisify(execFile);
const repo = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', '..', '..');

// The README promises `npm run demo` works; this runs the same example against the built
// packages (CI builds before testing) and checks what it reports, on the real driver.
test('the quickstart example stores a three-layer image, runs a container layer and reports its exact changes', async () => {
  const root = await mkdtemp(join(tmpdir(), 'cairn-quickstart-'));
  try {
    const { stdout } = await run(process.execPath, [join(repo, 'examples/quickstart/run.mjs')], {
      env: { ...process.env, CAIRN_ROOT: root, NODE_OPTIONS: '' },
    });
    expect(stdout).toMatch(/using the overlay2 driver/);
    expect(stdout).toMatch(/\/etc: +app\.conf os-release\n/);          // /etc/motd deleted by a whiteout
    expect(stdout).toMatch(/\/app\/cache: +fresh\.txt\n/);            // opaque dir hid stale.txt
    const changes = stdout.split('changes made by the container:\n')[1]!.split('\n\n')[0]!.trim().split('\n').map((l) => l.trim().split(/ +/));
    expect(changes).toEqual([
      ['modify', '/app'], ['add', '/app/data.json'], ['modify', '/etc'], ['delete', '/etc/app.conf'], ['modify', '/etc/os-release'],
    ]);
    expect(stdout).toMatch(/overlay2 +chosen +on extfs/);
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(root);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

// The example's image is the host's static busybox, copied into a layer.
describeBackend('busybox', busyboxMissing(), () => {
  test('the mini-runtime example runs a command in a container layer, reports its changes and commits it', async () => {
    const root = await mkdtemp(join(tmpdir(), 'cairn-mini-runtime-'));
    try {
      const { stdout } = await run(process.execPath, [join(repo, 'examples/mini-runtime/run.mjs')], {
        env: { ...process.env, CAIRN_ROOT: root, NODE_OPTIONS: '' },
      });
      expect(stdout).toMatch(/1 layer\(s\) on overlay2/);
      expect(stdout).toMatch(/command exited 0/);
      const changes = stdout.split('changes:\n')[1]!.split('\ncommitted')[0]!.trim().split('\n').map((l) => l.trim().split(/ +/));
      expect(changes).toEqual([
        ['modify', '/etc'], ['delete', '/etc/motd'], ['modify', '/tmp'], ['add', '/tmp/greeting'],
        ['modify', '/var'], ['add', '/var/log'], ['add', '/var/log/run'],
      ]);
      expect(stdout).toMatch(/committed as sha256:[0-9a-f]{12} \(2 layers\)/);
      expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(root);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
