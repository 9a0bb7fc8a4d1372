// aufs mount data is one comma-separated option list with ':'-separated `path=perm`
// branches and no quoting: a branch path with ',', ':' or '=', or a label that closes
// its quotes, injected options (issue 13). planAufsMount refuses them with
// ERR_INVALID_OPTION; get() checks before anything else, so it holds on this kernel too
// (which has no aufs and could never mount).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CairnError } from '@cairnfs/core';
import { aufsDriver, planAufsMount } from '@cairnfs/aufs';

function refused(f: () => unknown): CairnError {
  let err: unknown;
  try { f(); } catch (e) { err = e; }
  expect(err).toBeInstanceOf(CairnError);
  expect((err as CairnError).code).toBe('ERR_INVALID_OPTION');
  return err as CairnError;
}

describe('aufs mount data', () => {
  test('a plain stack: br with the rw branch, lower ones nearest first, xino and the quoted context', () => {
    const plan = planAufsMount('/r/diff/c', ['/r/diff/b', '/r/diff/a'], 'system_u:object_r:container_file_t:s0:c1,c2');
    expect(plan.data).toBe('br:/r/diff/c=rw:/r/diff/b=ro+wh:/r/diff/a=ro+wh,dio,xino=/dev/shm/aufs.xino,context="system_u:object_r:container_file_t:s0:c1,c2"');
    expect(plan.appends).toEqual([]);
  });

  test('branches past one page are appended one remount at a time', () => {
    const ro = Array.from({ length: 80 }, (_, i) => `/var/lib/cairn/aufs/diff/${String(i).padStart(64, '0')}`);
    const plan = planAufsMount('/var/lib/cairn/aufs/diff/top', ro);
    expect(plan.data.length).toBeLessThanOrEqual(4096 - 512);
    expect(plan.appends.length).toBeGreaterThan(0);
    expect(plan.appends[plan.appends.length - 1]).toBe(`append:${ro[79]}=ro+wh`);
  });

  test.each([
    ['a comma (a new option)', '/data,xino=/etc/passwd/diff/x'],
    ['a colon (a new branch)', '/data:/etc=rw/diff/x'],
    ['an equals sign (a branch permission)', '/data=rw/diff/x'],
    ['a newline', '/data\n/diff/x'],
  ])('a branch path with %s is refused', (_what, path) => {
    expect(refused(() => planAufsMount(path, [])).message).toMatch(/cannot carry/);
    expect(refused(() => planAufsMount('/ok', [path])).message).toMatch(/lower branch/);
  });

  test.each([
    ['a quote that closes the value', 'system_u:object_r:t:s0",br:/etc=rw'],
    ['a newline', 'system_u:object_r:t:s0\nbr:/etc=rw'],
  ])('a mount label with %s is refused', (_what, label) => {
    expect(refused(() => planAufsMount('/r/diff/a', [], label)).message).toMatch(/not an SELinux label/);
  });

  test('get() refuses an injected label or a storage root with a comma before it would mount', async () => {
    const base = await mkdtemp(join(tmpdir(), 'cairn-aufs-data-'));
    try {
      for (const [root, label] of [[join(base, 'ok'), 'a:b:c",xino=/etc/x'], [join(base, 'r,xino=x'), undefined]] as const) {
        const d = await aufsDriver.open({ root, home: join(root, 'aufs'), options: {}, lockTimeoutMs: 0 });
        try {
          await d.create('l1', null);
          await expect(d.get('l1', label ? { mountLabel: label } : undefined)).rejects.toMatchObject({ code: 'ERR_INVALID_OPTION' });
        } finally { await d.cleanup(); }
      }
    } finally { await rm(base, { recursive: true, force: true }); }
  });
});
