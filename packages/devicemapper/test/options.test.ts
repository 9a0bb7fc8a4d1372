import { isCairnError } from '@cairnfs/core';
import { Layout, humanSize, parseOptions, parsePoolStatus, parseSize } from '@cairnfs/devicemapper';

describe('devicemapper options', () => {
  test('defaults are moby\'s: 100G data, 2G metadata, 10G base, ext4, 64K blocks, 10% minimum free space', () => {
    const o = parseOptions({});
    expect(o).toMatchObject({
      loopDataSize: 100 * 2 ** 30, loopMetadataSize: 2 * 2 ** 30, baseSize: 10 * 2 ** 30, fs: 'ext4',
      blockSize: 65536, minFreeSpacePercent: 10, thinPoolDev: null, directLvmDevice: null,
      thinpPercent: 95, thinpMetaPercent: 1, autoextendThreshold: 80, autoextendPercent: 20,
    });
  });

  test('sizes use binary multiples with optional b/ib suffixes, as go-units RAMInBytes', () => {
    expect(parseSize('64K', 'x')).toBe(65536);
    expect(parseSize('10G', 'x')).toBe(10 * 2 ** 30);
    expect(parseSize('512mb', 'x')).toBe(512 * 2 ** 20);
    expect(parseSize('1.5GiB', 'x')).toBe(1.5 * 2 ** 30);
    expect(parseSize('4096', 'x')).toBe(4096);
    expect(() => parseSize('ten gigs', 'dm.basesize')).toThrow(/dm\.basesize=ten gigs is not a size/);
  });

  test('every dm.* option is read, with or without the dm. prefix', () => {
    const o = parseOptions({
      'dm.basesize': '20G', loopdatasize: '1G', 'dm.loopmetadatasize': '64M', 'dm.fs': 'xfs', 'dm.blocksize': '512K',
      'dm.mkfsarg': '-m 0', 'dm.mountopt': 'discard', 'dm.min_free_space': '5%', 'dm.use_deferred_removal': 'true',
      'dm.use_deferred_deletion': '1', 'dm.directlvm_device': '/dev/xvdf', 'dm.thinp_percent': '90',
      'dm.thinp_metapercent': '2', 'dm.thinp_autoextend_threshold': '70', 'dm.thinp_autoextend_percent': '30',
    });
    expect(o).toMatchObject({
      baseSize: 20 * 2 ** 30, baseSizeSet: true, loopDataSize: 2 ** 30, loopMetadataSize: 64 * 2 ** 20, fs: 'xfs', fsSet: true,
      blockSize: 512 * 1024, mkfsArgs: ['-m', '0'], mountOpt: 'discard', minFreeSpacePercent: 5, deferredRemoval: true,
      deferredDeletion: true, directLvmDevice: '/dev/xvdf', thinpPercent: 90, thinpMetaPercent: 2,
      autoextendThreshold: 70, autoextendPercent: 30,
    });
  });

  test.each([
    [{ 'dm.fs': 'btrfs' }, /use ext4 or xfs/],
    [{ 'dm.blocksize': '48K' }, /multiple of 64K/],
    [{ 'dm.use_deferred_removal': 'maybe' }, /not a boolean/],
    [{ 'dm.thinpooldev': 'p', 'dm.directlvm_device': '/dev/x' }, /cannot be used together/],
    [{ 'dm.thinp_percent': '99', 'dm.thinp_metapercent': '5' }, /more than the volume group/],
    [{ 'dm.nosuch': '1' }, /unknown devicemapper option dm\.nosuch/],
  ])('%j is ERR_INVALID_OPTION saying why', (raw, message) => {
    let caught: unknown;
    try { parseOptions(raw as Record<string, string>); } catch (err) { caught = err; }
    expect(isCairnError(caught, 'ERR_INVALID_OPTION')).toBe(true);
    expect((caught as Error).message).toMatch(message);
  });

  test('humanSize prints decimal units with 4 significant digits, like docker info', () => {
    expect(humanSize(65536)).toBe('65.54 kB');
    expect(humanSize(10 * 2 ** 30)).toBe('10.74 GB');
    expect(humanSize(0)).toBe('0 B');
  });

  test('a thin-pool status line is read field by field', () => {
    expect(parsePoolStatus('0 2097152 thin-pool 7 152/8192 46/16384 - rw discard_passdown queue_if_no_space - 1024')).toEqual({
      transactionId: 7, usedMetadataBlocks: 152, totalMetadataBlocks: 8192, usedDataBlocks: 46, totalDataBlocks: 16384, mode: 'rw',
    });
    expect(() => parsePoolStatus('0 2048 linear 8:1 0')).toThrow(/not a thin-pool/);
  });

  test('layout: moby\'s paths, readable device names that never collide with internal names, hashed when too long', () => {
    const l = new Layout('/var/lib/cairn/devicemapper', 'cairn-8:1-42');
    expect(l.dataFile).toBe('/var/lib/cairn/devicemapper/devicemapper/data');
    expect(l.metadataFile).toBe('/var/lib/cairn/devicemapper/devicemapper/metadata');
    expect(l.layerMeta('abc')).toBe('/var/lib/cairn/devicemapper/metadata/abc');
    expect(l.rootfs('abc')).toBe('/var/lib/cairn/devicemapper/mnt/abc/rootfs');
    expect(l.deviceName('base')).toBe('cairn-8:1-42-L-base');
    expect(l.deviceName('base')).not.toBe(l.baseName);
    expect(l.poolName).toBe('cairn-8:1-42-pool');
    const long = l.deviceName('x'.repeat(128));
    expect(long.length).toBeLessThanOrEqual(127);
    expect(long).toMatch(/^cairn-8:1-42-H-[0-9a-f]{64}$/);
    expect(l.deviceName('y'.repeat(128))).not.toBe(long);
  });
});
