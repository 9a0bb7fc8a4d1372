import { mkdir, writeFile, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fsMount, hasNewMountApi, mount, umount2 } from '@cairnfs/sys';
import type { SysError } from '@cairnfs/sys';
import { scratch, isMountPoint, type Scratch } from './helpers.js';

let s: Scratch;
beforeEach(async () => {
  s = await scratch();
});
afterEach(async () => {
  await s.cleanup();
});

async function overlayDirs(): Promise<{ upper: string; work: string; merged: string }> {
  const dirs = { upper: join(s.dir, 'upper'), work: join(s.dir, 'work'), merged: join(s.dir, 'merged') };
  for (const d of Object.values(dirs)) await mkdir(d);
  return dirs;
}

test('this kernel has the new mount API', () => {
  expect(hasNewMountApi()).toBe(true);
});

test('fsMount of a tmpfs honours its params and can be unmounted', async () => {
  const m = join(s.dir, 'm');
  await mkdir(m);
  await fsMount('tmpfs', 'cairn-test', [['size', '1m'], ['mode', '0700']], m);
  expect(isMountPoint(m)).toBe(true);
  const info = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').find((l) => l.split(' ')[4] === m);
  expect(info).toMatch(/ - tmpfs cairn-test rw,.*size=1024k.*mode=700/);
  await umount2(m);
  expect(isMountPoint(m)).toBe(false);
});

test('a readOnly fsMount refuses writes with EROFS', async () => {
  const m = join(s.dir, 'ro');
  await mkdir(m);
  await fsMount('tmpfs', null, [], m, { readOnly: true });
  await expect(writeFile(join(m, 'f'), 'x')).rejects.toMatchObject({ code: 'EROFS' });
});

test('overlay via fsMount stacks repeated lowerdir+ params, first param on top', async () => {
  const { upper, work, merged } = await overlayDirs();
  const lowers = ['top', 'mid', 'bottom'].map((n) => join(s.dir, n));
  for (const [i, l] of lowers.entries()) {
    await mkdir(l);
    await writeFile(join(l, 'shared'), `layer ${i}`);
    await writeFile(join(l, `only-${i}`), '');
  }
  await fsMount('overlay', 'overlay', [
    ...lowers.map((l): [string, string] => ['lowerdir+', l]),
    ['upperdir', upper], ['workdir', work], ['index', 'off'],
  ], merged);
  expect((await readdir(merged)).sort()).toEqual(['only-0', 'only-1', 'only-2', 'shared']);
  expect(await readFile(join(merged, 'shared'), 'utf8')).toBe('layer 0');
  await writeFile(join(merged, 'new'), 'up');
  expect(await readFile(join(upper, 'new'), 'utf8')).toBe('up');
});

test('overlay via fsMount resolves relative lowerdir+ values against cwd', async () => {
  const { upper, work, merged } = await overlayDirs();
  await mkdir(join(s.dir, 'layers', 'a'), { recursive: true });
  await writeFile(join(s.dir, 'layers', 'a', 'file'), 'rel');
  const before = process.cwd();
  await fsMount('overlay', 'overlay', [['lowerdir+', 'a'], ['upperdir', upper], ['workdir', work]], merged,
    { cwd: join(s.dir, 'layers') });
  expect(process.cwd()).toBe(before);
  expect(await readFile(join(merged, 'file'), 'utf8')).toBe('rel');
});

test('overlay via fsMount takes 210 lowers whose absolute paths exceed one page', async () => {
  const { upper, work, merged } = await overlayDirs();
  const lowers: string[] = [];
  for (let i = 0; i < 210; i++) {
    const l = join(s.dir, 'l', `layer-${String(i).padStart(4, '0')}-${'x'.repeat(40)}`);
    await mkdir(l, { recursive: true });
    await writeFile(join(l, `f${i}`), String(i));
    await writeFile(join(l, 'shared'), String(i));
    lowers.push(l);
  }
  const data = `lowerdir=${lowers.join(':')},upperdir=${upper},workdir=${work}`;
  expect(data.length).toBeGreaterThan(4096);
  // The classic API cannot carry this: mount(2) copies at most one page of data.
  await expect(mount('overlay', merged, 'overlay', 0, data)).rejects.toMatchObject({ syscall: 'mount' });
  expect(isMountPoint(merged)).toBe(false);

  await fsMount('overlay', 'overlay', [
    ...lowers.map((l): [string, string] => ['lowerdir+', l]),
    ['upperdir', upper], ['workdir', work],
  ], merged);
  const names = await readdir(merged);
  expect(names).toHaveLength(211);
  expect(await readFile(join(merged, 'f209'), 'utf8')).toBe('209');
  expect(await readFile(join(merged, 'shared'), 'utf8')).toBe('0');
});

test('a refused fsconfig reports the step, the param and the value', async () => {
  const { upper, work, merged } = await overlayDirs();
  const missing = join(s.dir, 'no-such-layer');
  const err = (await fsMount('overlay', 'overlay', [
    ['lowerdir+', missing], ['upperdir', upper], ['workdir', work],
  ], merged).catch((e: unknown) => e)) as SysError;
  expect(err).toMatchObject({ code: 'ENOENT', errno: -2, syscall: 'fsconfig', path: merged, param: 'lowerdir+' });
  // overlay reports lookup failures only to dmesg, so there is no kernel log line here.
  expect(err.message).toBe(`ENOENT: no such file or directory, fsconfig '${merged}' (lowerdir+=${missing})`);
});

test('the kernel log of the fs context is appended to the message', async () => {
  const err = (await fsMount('overlay', 'overlay', [['no-such-option', 'x']], s.dir).catch((e: unknown) => e)) as SysError;
  expect(err).toMatchObject({ code: 'EINVAL', syscall: 'fsconfig', param: 'no-such-option' });
  expect(err.message).toContain("(no-such-option=x; kernel: e overlay: Unknown parameter 'no-such-option')");
});

test('an unknown filesystem type fails at fsopen with ENODEV', async () => {
  await expect(fsMount('no-such-fs', null, [], s.dir)).rejects.toMatchObject({ code: 'ENODEV', syscall: 'fsopen' });
});

test('a missing target fails at move_mount with ENOENT', async () => {
  const target = join(s.dir, 'absent');
  await expect(fsMount('tmpfs', null, [], target)).rejects.toMatchObject({
    code: 'ENOENT', syscall: 'move_mount', path: target,
  });
});

test('a create-time failure names the create step', async () => {
  const { work, merged } = await overlayDirs();
  // overlay needs at least one lower layer; without one FSCONFIG_CMD_CREATE fails.
  const err = (await fsMount('overlay', 'overlay', [['workdir', work]], merged).catch((e: unknown) => e)) as SysError;
  expect(err).toMatchObject({ code: 'EINVAL', syscall: 'fsconfig' });
  expect(err.message).toMatch(/fsconfig '.*' \(create overlay/);
});

test('no file descriptors leak from successful or failed fsMount calls', async () => {
  const m = join(s.dir, 'm');
  await mkdir(m);
  const before = (await readdir('/proc/self/fd')).length;
  for (let i = 0; i < 30; i++) {
    await fsMount('tmpfs', null, [], m);
    await umount2(m);
    await expect(fsMount('overlay', 'overlay', [['bogus', null]], m)).rejects.toMatchObject({ syscall: 'fsconfig' });
    await expect(fsMount('tmpfs', null, [], join(s.dir, 'absent'))).rejects.toMatchObject({ syscall: 'move_mount' });
  }
  expect((await readdir('/proc/self/fd')).length).toBeLessThanOrEqual(before + 2);
});

test('params must be [key, value] pairs', () => {
  // @ts-expect-error: a one-element param
  expect(() => fsMount('tmpfs', null, [['size']], s.dir)).toThrow(/must be a \[key, value\] pair/);
  // @ts-expect-error: a number as a param value
  expect(() => fsMount('tmpfs', null, [['size', 5]], s.dir)).toThrow(/string or null/);
});
