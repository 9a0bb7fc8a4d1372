#!/usr/bin/env node
// A tiny container runtime on cairn: import an image, give a container a writable
// layer, run a command in it, show what it changed, and commit it as a new image.
//
//   sudo node examples/mini-runtime/run.mjs [IMAGE.tar|OCI-DIR] [COMMAND]
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { openDriver } from 'cairnfs';
import { LayerStore } from '@cairnfs/image';
import { makeBusyboxImage } from './busybox-image.mjs';

const root = resolve(process.env.CAIRN_ROOT ?? '.cairn/mini-runtime');
const command = process.argv[3] ?? 'echo hello > /tmp/greeting; rm /etc/motd; mkdir -p /var/log; date > /var/log/run; ls /';
const scratch = await mkdtemp(join(tmpdir(), 'mini-runtime-'));

const driver = await openDriver({ root });                    // overlay2 where the kernel has it
const store = await LayerStore.open(driver);
try {
  const source = process.argv[2] ?? await makeBusyboxImage(join(scratch, 'busybox'));
  const [image] = await store.importImage(source);
  console.log(`image ${image.id.slice(0, 19)} (${image.tags.join(', ')}): ${image.layers.length} layer(s) on ${driver.name}`);

  const name = `box-${process.pid}`;
  const container = await store.createContainer(image.id, name);
  const rootfs = await driver.get(container.mountId);
  // New mount, UTS, IPC and PID namespaces, then chroot: the essence of `docker run`
  // minus cgroups, seccomp and a network. runc would take the same rootfs.
  const run = spawnSync('unshare', ['--mount', '--uts', '--ipc', '--pid', '--fork', 'chroot', rootfs, '/bin/sh', '-c', command],
    { stdio: ['ignore', 'inherit', 'inherit'] });
  await driver.put(container.mountId);
  console.log(`command exited ${run.status}`);

  console.log('changes:');
  for (const c of await driver.changes(container.mountId)) console.log(`  ${c.kind.padEnd(6)} ${c.path}`);

  const committed = await store.commitContainer(name, { tag: 'busybox:committed' });
  console.log(`committed as ${committed.id.slice(0, 19)} (${committed.layers.length} layers)`);

  await store.removeContainer(name);
  for (const ref of [committed.id, image.id]) await store.removeImage(ref);
} finally {
  await driver.cleanup();
  await rm(scratch, { recursive: true, force: true });
}
