// Hostile parents and swapped nodes on the JS code paths (issue 13, "remove the class"):
// the pure-JS export, the pure-JS change walk and diff size, and the content check of
// both change walks must reach layer content only beneath the layer root, never through a
// symlink a container planted (or swaps in) as a parent component, and must never open a
// fifo or device where a regular file was listed. Each case fails on the code before the
// fix: host bytes in an export, a host file's size in a diff size, host names in a change
// list, a JS thread blocked for ever in open(2) of a fifo.
import * as fs from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { copyTree, isCairnError } from '@cairnfs/core';
import { Readable } from 'node:stream';
import { applyLayer, changesBetween, diffSizeOf, encodeHeader, exportChanges, exportTree, tarTrailer, type TarHeaderInput } from '@cairnfs/archive';
import { constants, mknodSync } from '@cairnfs/sys';
import { killChild, lineWithin, raceListing, spawnTsChild, startSwapRacer } from '@cairnfs/testkit';
import { isRoot, removeDir, streamToBuffer, tempDir } from './helpers.js';

const ROUNDS = Number(process.env.CAIRN_RACE_ROUNDS) > 0 ? Number(process.env.CAIRN_RACE_ROUNDS) : 30;
const SECRET = 'HOST-SECRET-BYTES';

let work: string;
let layer: string;
let host: string;
beforeEach(() => {
  work = tempDir('beneath');
  layer = join(work, 'layer');
  host = join(work, 'host');
  fs.mkdirSync(layer);
  fs.mkdirSync(host);
  fs.writeFileSync(join(host, 'secret'), SECRET);
});
afterEach(() => { removeDir(work); });

/** The outcome of an export read to its end: the bytes, or the error's code. */
async function drain(make: () => Promise<NodeJS.ReadableStream> | NodeJS.ReadableStream): Promise<{ bytes: Buffer; code: string | null }> {
  try {
    return { bytes: await streamToBuffer(await make() as AsyncIterable<Uint8Array>), code: null };
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    return { bytes: Buffer.alloc(0), code: isCairnError(err) || typeof code === 'string' ? String(code) : `no code: ${String(err)}` };
  }
}

describe('a parent component planted as a symlink to a host directory', () => {
  beforeEach(() => { fs.symlinkSync(host, join(layer, 'd')); });

  for (const pureJs of [true, false]) {
    const engine = pureJs ? 'pure-JS' : 'native';
    test(`${engine} export of a change list naming d/secret: no host byte in the output, ERR_BACKEND_FAILED`, async () => {
      // The list a walk made before the container swapped d for the symlink.
      const out = await drain(() => exportChanges(layer, [{ path: '/d', kind: 'modify' }, { path: '/d/secret', kind: 'add' }], { pureJs }));
      expect(out.bytes.includes(SECRET)).toBe(false);
      expect(out.code).toBe('ERR_BACKEND_FAILED');
    });

    test(`${engine} diffSize of d/secret counts nothing of the host file`, async () => {
      expect(await diffSizeOf(layer, [{ path: '/d/secret', kind: 'add' }], { pureJs })).toBe(0);
    });
  }
});

describe('a directory swapped with a symlink to a host directory while the tree is read', () => {
  // d holds 'A' files; evil -> host, which holds files the layer does not.
  function plant(): void {
    fs.mkdirSync(join(layer, 'd'));
    for (let i = 0; i < 64; i++) fs.writeFileSync(join(layer, 'd', `f${i}`), 'A'.repeat(64));
    for (let i = 0; i < 64; i++) fs.writeFileSync(join(host, `hostonly${i}`), SECRET);
    fs.symlinkSync(host, join(layer, 'evil'));
  }

  for (const pureJs of [true, false]) {
    const engine = pureJs ? 'pure JS' : 'native';
    test(`${engine} change walk: never lists a name of the host directory; a swap it meets is ERR_BACKEND_FAILED`, async () => {
      plant();
      const { hostNames, swaps, outcomes } = await raceListing({
        dir: layer, a: 'd', b: 'evil', rounds: ROUNDS * 20,
        walk: () => changesBetween(layer, null, { pureJs }),
      });
      console.log(`change walk race (${engine}, parent swap): ${swaps} swaps, walks ${JSON.stringify(outcomes)}`);
      expect(hostNames).toBe(0);
      expect(swaps).toBeGreaterThan(0);
      expect(Object.keys(outcomes).filter((k) => k !== 'ok' && k !== 'ERR_BACKEND_FAILED')).toEqual([]);
    }, 60_000);
  }

  test('pure-JS export of the whole tree: no host byte in any output', async () => {
    plant();
    const racer = await startSwapRacer({ dir: layer, a: 'd', b: 'evil' });
    const outcomes: Record<string, number> = {};
    let leaks = 0;
    let swaps = 0;
    try {
      for (let r = 0; r < ROUNDS * 10; r++) {
        const out = await drain(() => exportTree(layer, { pureJs: true }));
        if (out.bytes.includes(SECRET) || out.bytes.includes('hostonly')) leaks++;
        if (out.code !== null && String(out.code).includes('hostonly')) leaks++;
        const key = out.code ?? 'ok';
        outcomes[key] = (outcomes[key] ?? 0) + 1;
      }
    } finally {
      swaps = (await racer.stop()).swaps;
    }
    console.log(`export race (pure JS, parent swap): ${swaps} swaps, exports ${JSON.stringify(outcomes)}`);
    expect(leaks).toBe(0);
    expect(swaps).toBeGreaterThan(0);
    // A walk that finds its directory swapped fails with ERR_BACKEND_FAILED (the change
    // walk's and the export's), a file that changed after its header ERR_INVALID_ARCHIVE;
    // never a bare errno, never anything that read the host.
    expect(Object.keys(outcomes).filter((k) => k !== 'ok' && k !== 'ERR_BACKEND_FAILED' && k !== 'ERR_INVALID_ARCHIVE')).toEqual([]);
  }, 60_000);
});

/** Everything about a host directory someone would notice: names, modes, owners, times, content. */
function hostFacts(dir: string): string {
  return JSON.stringify(fs.readdirSync(dir).sort().map((name) => {
    const st = fs.lstatSync(join(dir, name), { bigint: true });
    return [name, st.mode.toString(8), String(st.uid), String(st.gid), String(st.mtimeNs), st.isFile() ? fs.readFileSync(join(dir, name), 'latin1') : ''];
  }));
}

describe('apply while the parent directory is swapped with a symlink to a host directory', () => {
  for (const pureJs of [true, false]) {
    // Owners and trusted.* xattrs need root; the fifo, file and directory entries do not.
    test(`${pureJs ? 'pure-JS' : 'native'} applier: the host directory is untouched (no file removed, made, chmodded or chowned)`, async () => {
      fs.writeFileSync(join(host, 'p'), SECRET, { mode: 0o600 });
      fs.chmodSync(join(host, 'p'), 0o600);
      fs.mkdirSync(join(host, 'sub'), { mode: 0o700 });
      for (const name of ['p', 'secret', 'sub']) fs.utimesSync(join(host, name), 1_000_000, 1_000_000);
      const before = hostFacts(host);
      fs.mkdirSync(join(layer, 'd'));
      fs.symlinkSync(host, join(layer, 'evil'));
      const owner = isRoot ? { uid: 1234, gid: 1234 } : { uid: process.getuid!(), gid: process.getgid!() };
      // Each entry replaces the one before it below d: removal, creation, owner, mode, times —
      // every step a window for the racer, which swaps d and evil.
      const entries: TarHeaderInput[] = [
        { name: 'd/p', type: 'fifo', mode: 0o6777, ...owner },
        { name: 'd/p', type: 'file', mode: 0o6777, size: 0, ...owner },
        { name: 'd/sub/', type: 'dir', mode: 0o777, ...owner },
        { name: 'd/secret', type: 'symlink', mode: 0o777, linkname: '/etc/shadow', ...owner },
      ];
      const round = Buffer.concat(entries.map((h) => encodeHeader(h)));
      const tar = Buffer.concat([...Array.from({ length: 100 }, () => round), tarTrailer()]);
      const racer = await startSwapRacer({ dir: layer, a: 'd', b: 'evil' });
      const outcomes: Record<string, number> = {};
      let changedAt = -1;
      let swaps = 0;
      try {
        for (let r = 0; r < ROUNDS && changedAt < 0; r++) {
          const result = await applyLayer(layer, Readable.from([tar]), { whiteouts: 'delete', pureJs }).then(() => 'ok', (e: unknown) => e);
          const key = result === 'ok' ? 'ok' : isCairnError(result) ? result.code : `not a CairnError: ${String(result)}`;
          outcomes[key] = (outcomes[key] ?? 0) + 1;
          if (hostFacts(host) !== before) changedAt = r;
        }
      } finally {
        swaps = (await racer.stop()).swaps;
      }
      console.log(`apply race (${pureJs ? 'pure JS' : 'native'}, parent swap): ${swaps} swaps, rounds ${JSON.stringify(outcomes)}`);
      expect({ changedAt, host: hostFacts(host) }).toEqual({ changedAt: -1, host: before });
      expect(swaps).toBeGreaterThan(0);
      expect(Object.keys(outcomes).filter((k) => k !== 'ok' && k !== 'ERR_UNSAFE_ARCHIVE' && k !== 'ERR_INVALID_ARCHIVE')).toEqual([]);
    }, 60_000);
  }
});

/** Every regular file below `dir` that holds host bytes, or whose name is a host file's. */
function hostTraces(dir: string, found: string[] = []): string[] {
  for (const name of fs.readdirSync(dir)) {
    const p = join(dir, name);
    const st = fs.lstatSync(p); // the copy holds the symlink evil -> host: never followed here either
    if (name.includes('hostonly') || (st.isFile() && fs.readFileSync(p).includes(SECRET))) found.push(p);
    if (st.isDirectory()) hostTraces(p, found);
  }
  return found;
}

describe('copyTree (vfs create and applyDiff, aufs, overlay2 id-mapped copies) of a tree something writes into', () => {
  test('a directory swapped with a symlink to a host directory: no host name or byte in any copy', async () => {
    fs.mkdirSync(join(layer, 'd'));
    for (let i = 0; i < 32; i++) fs.writeFileSync(join(layer, 'd', `f${i}`), 'A'.repeat(64));
    for (let i = 0; i < 32; i++) fs.writeFileSync(join(host, `hostonly${i}`), SECRET);
    fs.symlinkSync(host, join(layer, 'evil'));
    const racer = await startSwapRacer({ dir: layer, a: 'd', b: 'evil' });
    const outcomes: Record<string, number> = {};
    const traces: string[] = [];
    let swaps = 0;
    try {
      for (let r = 0; r < ROUNDS * 5; r++) {
        const dst = join(work, `copy${r}`);
        const key = await copyTree(layer, dst, { reflink: 'never' }).then(() => 'ok', (e: unknown) => (isCairnError(e) ? e.code : `not a CairnError: ${String(e)}`));
        outcomes[key] = (outcomes[key] ?? 0) + 1;
        traces.push(...hostTraces(dst));
        fs.rmSync(dst, { recursive: true, force: true });
      }
    } finally {
      swaps = (await racer.stop()).swaps;
    }
    console.log(`copyTree race (parent swap): ${swaps} swaps, copies ${JSON.stringify(outcomes)}`);
    expect(traces).toEqual([]);
    expect(swaps).toBeGreaterThan(0);
    expect(Object.keys(outcomes).filter((k) => k !== 'ok' && k !== 'ERR_BACKEND_FAILED')).toEqual([]);
  }, 60_000);

  test('a regular file swapped with a fifo: the fifo is never opened (a child that would hang for ever answers)', async () => {
    fs.mkdirSync(join(layer, 'd'));
    fs.writeFileSync(join(layer, 'd', 'f'), 'A'.repeat(4096));
    mknodSync(join(layer, 'd', 'z'), constants.S_IFIFO | 0o644, 0, 0);
    const scratch = join(work, 'copies');
    fs.mkdirSync(scratch);
    const racer = await startSwapRacer({ dir: join(layer, 'd'), a: 'f', b: 'z' });
    const child = spawnTsChild(fileURLToPath(new URL('./race-copy-child.ts', import.meta.url)), [layer, scratch, String(ROUNDS * 20)]);
    try {
      const answer = await lineWithin(child, 20_000);
      expect(answer).not.toBe('blocked');
      const { outcomes } = JSON.parse(answer) as { outcomes: Record<string, number> };
      console.log(`copyTree race (fifo): copies ${JSON.stringify(outcomes)}`);
      expect(Object.keys(outcomes).filter((k) => k !== 'ok' && k !== 'ERR_BACKEND_FAILED')).toEqual([]);
    } finally {
      killChild(child);
      await child.exited;
      const { swaps } = await racer.stop();
      expect(swaps).toBeGreaterThan(0);
    }
  }, 60_000);
});

describe('content check (contentCheckSinceSec) while the file compared is swapped with a fifo', () => {
  for (const engine of ['pure', 'native'] as const) {
    test(`${engine === 'pure' ? 'pure-JS' : 'native'} change walk: the fifo is never opened (a child that would hang for ever answers)`, async () => {
      const parent = join(work, 'parent');
      fs.mkdirSync(parent);
      for (const dir of [parent, layer]) {
        fs.mkdirSync(join(dir, 'd'));
        fs.writeFileSync(join(dir, 'd', 'f'), 'A'.repeat(4096));
        fs.utimesSync(join(dir, 'd', 'f'), 1_000_000, 1_000_000); // same metadata: only content can tell them apart
      }
      fs.utimesSync(join(parent, 'd'), 1_000_000, 1_000_000);
      fs.utimesSync(join(layer, 'd'), 1_000_000, 1_000_000);
      // A fifo the listing may see as d/f (then reported modified) or, swapped in after the
      // listing saw the file, find where it opens d/f to compare content.
      mknodSync(join(layer, 'd', 'z'), constants.S_IFIFO | 0o644, 0, 0);
      const racer = await startSwapRacer({ dir: join(layer, 'd'), a: 'f', b: 'z' });
      const child = spawnTsChild(fileURLToPath(new URL('./race-changes-child.ts', import.meta.url)), [layer, parent, String(ROUNDS * 20), engine]);
      try {
        const answer = await lineWithin(child, 20_000);
        expect(answer).not.toBe('blocked');
        const { outcomes } = JSON.parse(answer) as { outcomes: Record<string, number>; modified: number };
        console.log(`content-check race (${engine}, fifo): walks ${JSON.stringify(outcomes)}`);
      } finally {
        killChild(child);
        await child.exited;
        const { swaps } = await racer.stop();
        expect(swaps).toBeGreaterThan(0);
      }
    }, 60_000);
  }
});

