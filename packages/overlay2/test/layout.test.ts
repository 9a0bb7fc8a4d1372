import { CairnError } from '@cairnfs/core';
import {
  DEFAULT_MAX_DEPTH, Layout, assertDepth, childLowers, formatLowerFile, generateShortName, isShortName,
  mountData, parseLinkFile, parseLowerFile, planOverlayMount,
} from '@cairnfs/overlay2';
import type { OverlayMountRequest } from '@cairnfs/overlay2';

const A = 'AAAAAAAAAAAAAAAAAAAAAAAAAA';
const B = 'BBBBBBBBBBBBBBBBBBBBBBBBBB';

function shorts(n: number): string[] {
  return Array.from({ length: n }, () => `l/${generateShortName()}`);
}

describe('overlay2 layout (pure)', () => {
  test('short names are 26 characters of A–Z and 2–7, as base32 of 16 bytes without padding', () => {
    expect(generateShortName(new Uint8Array(16))).toBe('A'.repeat(26));
    expect(generateShortName(new Uint8Array(16).fill(0xff))).toBe(`${'7'.repeat(25)}4`);
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const s = generateShortName();
      expect(s).toMatch(/^[A-Z2-7]{26}$/);
      seen.add(s);
    }
    expect(seen.size).toBe(200);
    expect(isShortName('a'.repeat(26))).toBe(false);
    expect(isShortName(`${A}A`)).toBe(false);
  });

  test('a child lists its parent link first, then the parent lowers, joined without a newline', () => {
    const lowers = childLowers(A, [`l/${B}`]);
    expect(formatLowerFile(lowers)).toBe(`l/${A}:l/${B}`);
    expect(parseLowerFile(`l/${A}:l/${B}`, 'x')).toEqual([`l/${A}`, `l/${B}`]);
    expect(parseLowerFile(`l/${A}\n`, 'x')).toEqual([`l/${A}`]);
    expect(parseLowerFile('', 'x')).toEqual([]);
  });

  test('a lower file with an entry that is not l/<short> is refused rather than mounted', () => {
    expect(() => parseLowerFile(`l/${A}:../../etc`, 'bad')).toThrow(CairnError);
    expect(() => parseLowerFile('/abs/path', 'bad')).toThrow(/corrupt lower file/);
  });

  test('link files parse with or without a trailing newline; garbage is undefined', () => {
    expect(parseLinkFile(A)).toBe(A);
    expect(parseLinkFile(`${A}\n`)).toBe(A);
    expect(parseLinkFile('nope')).toBeUndefined();
  });

  test('depth: 128 lowers pass, 129 fail with ERR_MAX_DEPTH naming the limit and overlay2.maxDepth', () => {
    expect(() => assertDepth(shorts(DEFAULT_MAX_DEPTH), DEFAULT_MAX_DEPTH, 'ok')).not.toThrow();
    let err: unknown;
    try {
      assertDepth(shorts(DEFAULT_MAX_DEPTH + 1), DEFAULT_MAX_DEPTH, 'deep');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CairnError);
    expect((err as CairnError).code).toBe('ERR_MAX_DEPTH');
    expect((err as CairnError).message).toMatch(/limit of 128/);
    expect((err as CairnError).message).toMatch(/overlay2\.maxDepth/);
  });

  test('layout paths follow moby: <home>/<id>/{diff,work,merged,link,lower}, l/<short> -> ../<id>/diff', () => {
    const l = new Layout('/var/lib/cairn/overlay2');
    expect(l.diffDir('x')).toBe('/var/lib/cairn/overlay2/x/diff');
    expect(l.workDir('x')).toBe('/var/lib/cairn/overlay2/x/work');
    expect(l.mergedDir('x')).toBe('/var/lib/cairn/overlay2/x/merged');
    expect(l.lowerFile('x')).toBe('/var/lib/cairn/overlay2/x/lower');
    expect(l.linkPath(A)).toBe(`/var/lib/cairn/overlay2/l/${A}`);
    expect(l.linkTarget('x')).toBe('../x/diff');
    expect(l.absoluteLowers([`l/${A}`])).toEqual([`/var/lib/cairn/overlay2/l/${A}`]);
  });
});

describe('overlay2 mount planning (pure)', () => {
  const base: OverlayMountRequest = {
    home: '/var/lib/cairn/overlay2', id: 'c1', lowers: [`l/${A}`, `l/${B}`], readOnly: false,
    indexOff: true, userXattr: false, newMountApi: true,
  };

  test('a short stack mounts with absolute paths, index=off first, exactly like dockerd', () => {
    const spec = planOverlayMount(base);
    expect(spec.method).toBe('mount');
    expect(spec.cwd).toBeNull();
    expect(spec.target).toBe('/var/lib/cairn/overlay2/c1/merged');
    expect(mountData(spec.options)).toBe(
      `index=off,lowerdir=/var/lib/cairn/overlay2/l/${A}:/var/lib/cairn/overlay2/l/${B},` +
      'upperdir=/var/lib/cairn/overlay2/c1/diff,workdir=/var/lib/cairn/overlay2/c1/work');
  });

  test('a read-only (image) layer has its own diff as top lower, no upper, and the read-only flag', () => {
    const spec = planOverlayMount({ ...base, readOnly: true, indexOff: false });
    expect(spec.readOnly).toBe(true);
    expect(mountData(spec.options)).toBe(
      `lowerdir=/var/lib/cairn/overlay2/c1/diff:/var/lib/cairn/overlay2/l/${A}:/var/lib/cairn/overlay2/l/${B}`);
  });

  test('when absolute paths exceed a page, paths become relative to the home and the home is the cwd', () => {
    const home = `/${'x'.repeat(200)}/overlay2`;
    const lowers = shorts(20);
    const spec = planOverlayMount({ ...base, home, lowers });
    expect(spec.method).toBe('mount');
    expect(spec.cwd).toBe(home);
    expect(spec.target).toBe('c1/merged');
    const data = mountData(spec.options);
    expect(data.length).toBeLessThan(4096);
    expect(data).toBe(`index=off,lowerdir=${lowers.join(':')},upperdir=c1/diff,workdir=c1/work`);
  });

  test('128 lowers fit a page relative to the home, as moby relies on', () => {
    const spec = planOverlayMount({ ...base, lowers: shorts(128) });
    expect(spec.method).toBe('mount');
    expect(spec.cwd).toBe(base.home);
  });

  test('deeper stacks use the new mount API with one lowerdir+ per layer', () => {
    const lowers = shorts(500);
    const spec = planOverlayMount({ ...base, lowers });
    expect(spec.method).toBe('fsmount');
    const lowerOpts = spec.options.filter(([k]) => k === 'lowerdir+');
    expect(lowerOpts).toHaveLength(500);
    expect(lowerOpts[0]![1]).toBe(`/var/lib/cairn/overlay2/${lowers[0]}`);
    expect(spec.options[0]).toEqual(['index', 'off']);
    expect(spec.options.slice(-2)).toEqual([['upperdir', '/var/lib/cairn/overlay2/c1/diff'], ['workdir', '/var/lib/cairn/overlay2/c1/work']]);
  });

  test('without the new mount API a stack that does not fit is ERR_NOT_SUPPORTED with advice', () => {
    expect(() => planOverlayMount({ ...base, lowers: shorts(300), newMountApi: false })).toThrow(/overlay2\.maxDepth/);
  });

  test('a home with characters overlayfs parses (comma, colon) is always mounted relative', () => {
    const spec = planOverlayMount({ ...base, home: '/tmp/a,b:c/overlay2' });
    expect(spec.cwd).toBe('/tmp/a,b:c/overlay2');
    expect(mountData(spec.options)).not.toContain('/tmp');
  });

  test('userxattr and a mount label are passed through', () => {
    const spec = planOverlayMount({ ...base, userXattr: true, mountLabel: 'system_u:object_r:container_file_t:s0' });
    expect(spec.options[1]).toEqual(['userxattr', null]);
    expect(spec.options.at(-1)).toEqual(['context', '"system_u:object_r:container_file_t:s0"']);
  });
});
