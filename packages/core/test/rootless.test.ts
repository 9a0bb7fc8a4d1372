import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { idMappingsKey, parseIdMappingsKey, rootlessIdMappings, subordinateRanges, validateIdMappings } from '@cairnfs/core';

test('subordinateRanges reads a user\'s lines by name or uid, in order, and nothing else', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-subuid-'));
  try {
    const file = join(dir, 'subuid');
    writeFileSync(file, 'alice:100000:65536\n# comment\nbob:165536:65536\n1001:300000:1000\nalice:400000:10\nalice:500000:0\nbroken line\n');
    expect(subordinateRanges(file, { name: 'alice', uid: 1001 })).toEqual([
      { start: 100000, count: 65536 }, { start: 300000, count: 1000 }, { start: 400000, count: 10 }]);
    expect(subordinateRanges(file, { name: 'carol', uid: 7 })).toEqual([]);
    expect(subordinateRanges(join(dir, 'missing'), { name: 'alice', uid: 1001 })).toEqual([]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('rootlessIdMappings maps container 0 to the caller and 1… to the ranges, as podman does', () => {
  const maps = rootlessIdMappings(1001, 1002, [{ start: 100000, count: 65536 }, { start: 300000, count: 10 }], [{ start: 200000, count: 65536 }]);
  expect(maps).toEqual({
    uidMap: [{ containerId: 0, hostId: 1001, size: 1 }, { containerId: 1, hostId: 100000, size: 65536 }, { containerId: 65537, hostId: 300000, size: 10 }],
    gidMap: [{ containerId: 0, hostId: 1002, size: 1 }, { containerId: 1, hostId: 200000, size: 65536 }],
  });
  expect(validateIdMappings(maps)).toEqual(maps);
  expect(parseIdMappingsKey(idMappingsKey(maps))).toEqual(maps);
});

test('validateIdMappings refuses what the kernel would: empty maps, overlaps on either side, ids past 2^32', () => {
  const ok = [{ containerId: 0, hostId: 100000, size: 65536 }];
  expect(() => validateIdMappings({ uidMap: [], gidMap: ok })).toThrow(/uidMap must be a non-empty array/);
  expect(() => validateIdMappings({ uidMap: [...ok, { containerId: 10, hostId: 900000, size: 5 }], gidMap: ok })).toThrow(/overlap on the container side/);
  expect(() => validateIdMappings({ uidMap: [...ok, { containerId: 70000, hostId: 100005, size: 5 }], gidMap: ok })).toThrow(/overlap on the host side/);
  expect(() => validateIdMappings({ uidMap: [{ containerId: 0, hostId: 2 ** 32 - 2, size: 5 }], gidMap: ok })).toThrow(/below 2\^32/);
});
