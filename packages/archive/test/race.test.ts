// Race tests (issue 13, findings 2 and 3): a hostile process inside the layer (a running
// container, or another local user) swaps names with RENAME_EXCHANGE, thousands of
// times a second, while apply and export work there. The racer is a C program built by
// the test (@cairnfs/testkit startSwapRacer). Bounded: CAIRN_RACE_ROUNDS rounds per case
// (default 30), each case well under 20 s. Asserted: no host file outside the layer is
// touched (mode, owner, times, xattrs, content), no byte of a device or fifo swapped in
// reaches an output, the JS thread never blocks, and every round ends either cleanly or
// with the CairnError that names the swap.
import * as fs from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Readable } from 'node:stream';
import { isCairnError } from '@cairnfs/core';
import {
  applyLayer, encodeHeader, exportChanges, exportTree, readTar, tarTrailer, type TarHeaderInput,
} from '@cairnfs/archive';
import { lgetxattrSync, mknodSync, constants } from '@cairnfs/sys';
import { killChild, lineWithin, spawnTsChild, startSwapRacer, testAsRoot } from '@cairnfs/testkit';
import { removeDir, tempDir } from './helpers.js';

const ROUNDS = Number(process.env.CAIRN_RACE_ROUNDS) > 0 ? Number(process.env.CAIRN_RACE_ROUNDS) : 30;

let work: string;
beforeEach(() => { work = tempDir('race'); });
afterEach(() => { removeDir(work); });

/** What a host file looks like to someone who would notice it changed. */
function facts(path: string): string {
  const st = fs.lstatSync(path, { bigint: true });
  return JSON.stringify({
    mode: st.mode.toString(8), uid: String(st.uid), gid: String(st.gid), mtime: String(st.mtimeNs),
    content: fs.readFileSync(path, 'utf8'), xattr: lgetxattrSync(path, 'trusted.cairn-race')?.toString() ?? null,
  });
}

function count(outcomes: Map<string, number>, key: string): void {
  outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
}

describe.each([['native', false], ['pure-JS', true]] as const)('%s apply while the name being made is swapped for a symlink to a host file', (engine, pureJs) => {
  for (const type of ['fifo', 'char'] as const) {
    testAsRoot(`${type} entries (mode 6777, owner 1234, an xattr): the host canary keeps its mode, owner, times and xattrs`, async () => {
      const canary = join(work, 'canary');
      fs.writeFileSync(canary, 'host file', { mode: 0o600 });
      fs.chmodSync(canary, 0o600);
      fs.utimesSync(canary, 1_000_000, 1_000_000);
      const before = facts(canary);
      const layer = join(work, 'layer');
      fs.mkdirSync(join(layer, 'd'), { recursive: true });
      // Each entry replaces the one before: remove, mknod, then owner/mode/xattr/times —
      // the window the racer aims at, 500 times per round.
      const header: TarHeaderInput = {
        name: 'd/p', type, mode: 0o6777, uid: 1234, gid: 1234, devmajor: 1, devminor: 3,
        xattrs: new Map([['trusted.cairn-race', Buffer.from('set')]]),
      };
      const one = encodeHeader(header);
      const tar = Buffer.concat([...Array.from({ length: 500 }, () => one), tarTrailer()]);
      const racer = await startSwapRacer({ dir: join(layer, 'd'), a: 'p', b: 'evil', symlinkTo: canary });
      const outcomes = new Map<string, number>();
      let changedAt = -1;
      let swaps = 0;
      try {
        for (let r = 0; r < ROUNDS && changedAt < 0; r++) {
          const result = await applyLayer(layer, Readable.from([tar]), { whiteouts: 'delete', pureJs }).then(() => 'ok', (e: unknown) => e);
          count(outcomes, result === 'ok' ? 'ok' : isCairnError(result) ? result.code : `${(result as Error).message}`);
          if (facts(canary) !== before) changedAt = r;
        }
      } finally {
        swaps = (await racer.stop()).swaps;
      }
      console.log(`apply race (${engine}, ${type}): ${swaps} swaps, rounds ${JSON.stringify(Object.fromEntries(outcomes))}`);
      expect({ changedAt, canary: facts(canary) }).toEqual({ changedAt: -1, canary: before });
      expect(swaps).toBeGreaterThan(0);
      expect([...outcomes.keys()].filter((k) => k !== 'ok' && k !== 'ERR_UNSAFE_ARCHIVE')).toEqual([]);
    }, 60_000);
  }
});

/** A layer with d/f (128 KiB of 'A') and d/z, a node of `kind` the racer swaps with d/f. */
function exportLayer(kind: 'zero' | 'fifo'): string {
  const layer = join(work, 'layer');
  fs.mkdirSync(join(layer, 'd'), { recursive: true });
  fs.writeFileSync(join(layer, 'd', 'f'), Buffer.alloc(128 << 10, 0x41));
  // /dev/zero's numbers: any byte of it in the output is a byte the layer does not hold.
  if (kind === 'zero') mknodSync(join(layer, 'd', 'z'), constants.S_IFCHR | 0o666, 1, 5);
  else mknodSync(join(layer, 'd', 'z'), constants.S_IFIFO | 0o644, 0, 0);
  return layer;
}

/** Reads an export to the end: bytes of regular-file content that are not 'A'. */
async function devBytesIn(tar: Readable): Promise<number> {
  let bad = 0;
  for await (const { header, body } of readTar(tar)) {
    for await (const chunk of body) {
      if (header.type !== 'file') continue;
      for (const byte of chunk as Uint8Array) if (byte !== 0x41) bad++;
    }
  }
  return bad;
}

describe('export while a regular file is swapped with a device or a fifo', () => {
  const changes = [
    { path: '/d', kind: 'modify' as const }, { path: '/d/f', kind: 'add' as const }, { path: '/d/z', kind: 'add' as const },
  ];
  for (const kind of ['zero', 'fifo'] as const) {
    (kind === 'zero' ? testAsRoot : test)(`native packer, ${kind === 'zero' ? '/dev/zero' : 'a fifo'}: no byte of it in any output, every failure names the change`, async () => {
      const layer = exportLayer(kind);
      const racer = await startSwapRacer({ dir: join(layer, 'd'), a: 'f', b: 'z' });
      const outcomes = new Map<string, number>();
      let devBytes = 0;
      let swaps = 0;
      try {
        for (let r = 0; r < ROUNDS * 10; r++) {
          for (const make of [() => exportTree(layer), async () => exportChanges(layer, changes)]) {
            try {
              devBytes += await devBytesIn(await make());
              count(outcomes, 'ok');
            } catch (err) {
              count(outcomes, isCairnError(err) ? `${err.code}${/replaced/.test(err.message) ? ' (replaced)' : ''}` : String(err));
            }
          }
        }
      } finally {
        swaps = (await racer.stop()).swaps;
      }
      console.log(`export race (native, ${kind}): ${swaps} swaps, exports ${JSON.stringify(Object.fromEntries(outcomes))}`);
      expect(devBytes).toBe(0);
      expect(swaps).toBeGreaterThan(0);
      // A swap seen between lstat and open is 'replaced'; one seen between the listing and
      // the lstat is a different but consistent entry; a fifo read short is 'shorter'.
      expect([...outcomes.keys()].filter((k) => k !== 'ok' && k !== 'ERR_INVALID_ARCHIVE (replaced)' && k !== 'ERR_INVALID_ARCHIVE')).toEqual([]);
    }, 60_000);
  }

  testAsRoot('pure-JS path, /dev/zero: no byte of it in any output', async () => {
    const layer = exportLayer('zero');
    const racer = await startSwapRacer({ dir: join(layer, 'd'), a: 'f', b: 'z' });
    let devBytes = 0;
    let swaps = 0;
    const outcomes = new Map<string, number>();
    try {
      for (let r = 0; r < ROUNDS * 5; r++) {
        try {
          devBytes += await devBytesIn(exportChanges(layer, changes, { pureJs: true }));
          count(outcomes, 'ok');
        } catch (err) {
          count(outcomes, isCairnError(err) ? err.code : String(err));
        }
      }
    } finally {
      swaps = (await racer.stop()).swaps;
    }
    console.log(`export race (pure JS, /dev/zero): ${swaps} swaps, exports ${JSON.stringify(Object.fromEntries(outcomes))}`);
    expect(devBytes).toBe(0);
    expect(swaps).toBeGreaterThan(0);
  }, 60_000);

  test('pure-JS path, a fifo: the JS thread never blocks in open (a child that would hang for ever answers)', async () => {
    const layer = exportLayer('fifo');
    const racer = await startSwapRacer({ dir: join(layer, 'd'), a: 'f', b: 'z' });
    const child = spawnTsChild(fileURLToPath(new URL('./race-export-child.ts', import.meta.url)), [layer, String(ROUNDS * 5)]);
    try {
      const answer = await lineWithin(child, 20_000);
      expect(answer).not.toBe('blocked');
      const { outcomes, devBytes } = JSON.parse(answer) as { outcomes: Record<string, number>; devBytes: number };
      console.log(`export race (pure JS, fifo): exports ${JSON.stringify(outcomes)}`);
      expect(devBytes).toBe(0);
      expect(Object.keys(outcomes).filter((k) => k !== 'ok' && k !== 'ERR_INVALID_ARCHIVE')).toEqual([]);
    } finally {
      killChild(child);
      await child.exited;
      const { swaps } = await racer.stop();
      expect(swaps).toBeGreaterThan(0);
    }
  }, 60_000);
});
