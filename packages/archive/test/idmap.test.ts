// applyLayer with idMappings / ignoreChownErrors, export mapping owners back, and device
// placeholders, on both file paths (native and pure JS), as root and inside a user
// namespace that maps a single id (what `unshare --map-root-user` gives a rootless user).
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { applyLayer, exportChanges, exportOverlayUpper, exportTree } from '@cairnfs/archive';
import { lsetxattrSync } from '@cairnfs/sys';
import type { IdMappings } from '@cairnfs/core';
import { describeBackend, expectCode, packedTarOf, tarOf } from '@cairnfs/testkit';
import { readAll, removeDir, tempDir } from './helpers.js';

const A: IdMappings = { uidMap: [{ containerId: 0, hostId: 100000, size: 65536 }], gidMap: [{ containerId: 0, hostId: 200000, size: 65536 }] };

const file = (name: string, body: string, uid: number, gid: number, mode = 0o644) =>
  ({ header: { name, type: 'file' as const, mode, uid, gid, size: body.length }, body: Buffer.from(body) });
const multiUser = () => packedTarOf([
  { header: { name: 'etc', type: 'dir', mode: 0o755 } },
  file('etc/passwd', 'root', 0, 0),
  { header: { name: 'www', type: 'dir', mode: 0o750, uid: 33, gid: 33 } },
  file('www/index.html', 'hi', 33, 34),
  { header: { name: 'bin', type: 'dir', mode: 0o755 } },
  file('bin/su', '#!', 0, 0, 0o4755),
  { header: { name: 'link', type: 'symlink', mode: 0o777, linkname: 'etc/passwd', uid: 1, gid: 1 } },
  { header: { name: 'dev', type: 'dir', mode: 0o755 } },
  { header: { name: 'dev/null', type: 'char', mode: 0o666, devmajor: 1, devminor: 3 } },
]);

function owners(entries: Awaited<ReturnType<typeof readAll>>): string[] {
  return entries.map((e) => `${e.header.name} ${e.header.uid}:${e.header.gid}`).sort();
}

const rootMissing = process.getuid?.() === 0 ? null : 'needs root to chown into another id range';

for (const pureJs of [false, true]) {
  describeBackend('root', rootMissing, () => {
    describe(`applyLayer with idMappings (${pureJs ? 'pure JS' : 'native'})`, () => {
      let dir: string;
      beforeEach(() => { dir = tempDir('idmap'); });
      afterEach(() => removeDir(dir));

      test('owners are stored shifted, setuid kept, and every export given the maps gives the original owners back', async () => {
        const tar = await multiUser();
        await applyLayer(dir, Readable.from([tar]), { idMappings: A, pureJs });
        const st = (p: string) => fs.lstatSync(join(dir, p));
        expect([st('etc/passwd').uid, st('etc/passwd').gid]).toEqual([100000, 200000]);
        expect([st('www/index.html').uid, st('www/index.html').gid]).toEqual([100033, 200034]);
        expect([st('link').uid, st('dev/null').uid]).toEqual([100001, 100000]);
        expect(st('bin/su').mode & 0o7777).toBe(0o4755);
        const original = owners((await readAll(tar)).filter((e) => e.header.name !== './'));
        const tree = owners(await readAll(await exportTree(dir, { idMappings: A, pureJs })));
        expect(tree.map((l) => l.replace(/\/ /, ' '))).toEqual(original.map((l) => l.replace(/\/ /, ' ')));
        const changes = await readAll(exportChanges(dir, [{ path: '/www/index.html', kind: 'add' }], { idMappings: A, pureJs }));
        expect(owners(changes)).toEqual(['www/index.html 33:34']);
        // Without the maps, the export shows what is on disk.
        expect(owners(await readAll(exportOverlayUpper(dir, { pureJs })))).toContain('www/index.html 100033:200034');
      });

      test('an owner the maps do not cover is ERR_INVALID_OPTION naming idMappings; with ignoreChownErrors it is the caller\'s, and the report says so', async () => {
        const tar = await tarOf([{ name: 'big', content: 'x', uid: 70000, gid: 0 }]);
        const err = await applyLayer(dir, Readable.from([tar]), { idMappings: A, pureJs }).catch((e: Error) => e);
        expect(err).toMatchObject({ code: 'ERR_INVALID_OPTION' });
        expect((err as Error).message).toMatch(/idMappings.*ignoreChownErrors/);
        const reports: unknown[] = [];
        await applyLayer(dir, Readable.from([tar]), { idMappings: A, ignoreChownErrors: true, pureJs, report: (d) => reports.push(d) });
        expect(fs.lstatSync(join(dir, 'big')).uid).toBe(0);
        expect(reports).toEqual([{ chowns: 1, firstChown: 'big 70000:0', devices: 0, firstDevice: '' }]);
      });

      test('an export of a file whose owner is outside the layer\'s map is ERR_BACKEND_FAILED naming the file', async () => {
        fs.writeFileSync(join(dir, 'stray'), 'x');
        fs.chownSync(join(dir, 'stray'), 5, 5);
        await expectCode(readAll(await exportTree(dir, { idMappings: A, pureJs })), 'ERR_BACKEND_FAILED');
      });

      test('a device placeholder (empty 0000 file with the override_stat record) is exported as the device it stands for', async () => {
        fs.mkdirSync(join(dir, 'dev'));
        fs.chownSync(dir, 100000, 200000);
        fs.chownSync(join(dir, 'dev'), 100000, 200000);
        fs.writeFileSync(join(dir, 'dev', 'tty'), '', { mode: 0 });
        fs.chmodSync(join(dir, 'dev', 'tty'), 0);
        fs.chownSync(join(dir, 'dev', 'tty'), 100000, 200005);
        lsetxattrSync(join(dir, 'dev', 'tty'), 'user.containers.override_stat', Buffer.from('100000:200005:0620:char-5-0'));
        const [, tty] = await readAll(await exportTree(dir, { idMappings: A, pureJs }));
        expect(tty!.header).toMatchObject({ name: 'dev/tty', type: 'char', mode: 0o620, uid: 0, gid: 5, devmajor: 5, devminor: 0 });
        expect(tty!.header.xattrs.size).toBe(0);
      });
    });
  });
}

// A user namespace that maps only the caller: every chown to another id is EINVAL, mknod EPERM.
const unshareMissing = (() => {
  if (process.getuid?.() !== 0) return 'needs root to make the test directory for the namespace';
  const r = spawnSync('unshare', ['--user', '--map-root-user', 'true']);
  return r.status === 0 ? null : `unshare --user --map-root-user failed (${r.stderr?.toString().trim() || r.error?.message}); user namespaces are disabled`;
})();

describeBackend('userns', unshareMissing, () => {
  const child = join(import.meta.dirname, 'fixtures', 'apply-in-userns.mjs');
  function applyInUserns(dir: string, tar: Buffer, opts: object): { ok: boolean; code?: string; message?: string; warnings?: Array<{ code: string; message: string }>; tar?: string } {
    const out = execFileSync('unshare', ['--user', '--map-root-user', process.execPath, child, dir, JSON.stringify(opts)], { input: tar });
    return JSON.parse(out.toString());
  }

  for (const pureJs of [false, true]) {
    test(`with a single id: the chown error names ignoreChownErrors; with it, files are the caller's, devices are recorded and exported back (${pureJs ? 'pure JS' : 'native'})`, async () => {
      const tar = await multiUser();
      const dir = tempDir('userns');
      try {
        const refused = applyInUserns(dir, tar, { pureJs });
        expect(refused).toMatchObject({ ok: false, code: 'ERR_PREREQUISITES' });
        expect(refused.message).toMatch(/ignoreChownErrors: true/);
        expect(refused.message).toMatch(/cairn unshare/);
        removeDir(dir);
        fs.mkdirSync(dir);
        const done = applyInUserns(dir, tar, { pureJs, ignoreChownErrors: true });
        expect(done.ok).toBe(true);
        expect(done.warnings!.map((w) => w.code).sort()).toEqual(['CAIRN_CHOWN_DROPPED', 'CAIRN_DEVICES_RECORDED']);
        expect(done.warnings!.find((w) => w.code === 'CAIRN_DEVICES_RECORDED')!.message).toMatch(/1 device node.*dev\/null/);
        expect(fs.lstatSync(join(dir, 'www/index.html')).uid).toBe(0); // the caller (host root here)
        expect(fs.lstatSync(join(dir, 'dev/null')).isFile()).toBe(true); // a placeholder, not a device
        const back = await readAll(Buffer.from(done.tar!, "base64"));
        expect(back.find((e) => e.header.name === 'dev/null')!.header).toMatchObject({ type: 'char', mode: 0o666, devmajor: 1, devminor: 3 });
        expect(back.find((e) => e.header.name === 'bin/su')!.header.mode).toBe(0o4755);
      } finally {
        removeDir(dir);
      }
    });
  }
});
