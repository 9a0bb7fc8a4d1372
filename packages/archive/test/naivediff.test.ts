import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { CairnError, copyTree } from '@cairnfs/core';
import { NaiveDiff } from '@cairnfs/archive';
import type { NaiveDiffHost } from '@cairnfs/archive';
import { collect, tarEntries, tarOf } from '@cairnfs/testkit';

/**
 * The smallest real host: layers are plain directories under `work`, get/put count
 * references the way a driver must, and the test can see the counts.
 */
class DirHost implements NaiveDiffHost {
  readonly counts = new Map<string, number>();
  constructor(private readonly work: string, private readonly parents: Record<string, string | null>) {}
  async get(id: string): Promise<string> {
    if (!(id in this.parents)) throw new CairnError('ERR_LAYER_NOT_FOUND', `no layer ${id}`);
    this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
    return join(this.work, id);
  }
  async put(id: string): Promise<void> {
    const n = this.counts.get(id) ?? 0;
    if (n === 0) throw new CairnError('ERR_NOT_MOUNTED', `${id} not mounted`);
    this.counts.set(id, n - 1);
  }
  async parentOf(id: string): Promise<string | null> {
    if (!(id in this.parents)) throw new CairnError('ERR_LAYER_NOT_FOUND', `no layer ${id}`);
    return this.parents[id]!;
  }
  outstanding(): number {
    return [...this.counts.values()].reduce((a, b) => a + b, 0);
  }
}

let work: string;
let host: DirHost;
let naive: NaiveDiff;

beforeEach(async () => {
  work = await mkdtemp(join(tmpdir(), 'cairn-naive-'));
  await mkdir(join(work, 'base'));
  await writeFile(join(work, 'base', 'kept'), 'k');
  await writeFile(join(work, 'base', 'gone'), 'g');
  await copyTree(join(work, 'base'), join(work, 'child'));
  await rm(join(work, 'child', 'gone'));
  await writeFile(join(work, 'child', 'big'), Buffer.alloc(3 << 20, 9));
  host = new DirHost(work, { base: null, child: 'base' });
  naive = new NaiveDiff(host);
});
afterEach(async () => { await rm(work, { recursive: true, force: true }); });

test("parent undefined means the layer's own parent; null means the whole layer", async () => {
  expect(await naive.changes('child')).toEqual([{ path: '/big', kind: 'add' }, { path: '/gone', kind: 'delete' }]);
  expect((await naive.changes('child', null)).map((c) => c.kind)).toEqual(['add', 'add']);
  expect(await naive.diffSize('child')).toBe(3 << 20);
  expect(host.outstanding()).toBe(0);
});

test('diff streams an OCI changeset and puts both layers back once it has been read', async () => {
  const stream = await naive.diff('child');
  expect(host.counts.get('child')).toBe(1);
  expect(host.counts.get('base')).toBe(1);
  const names = (await tarEntries(await collect(stream))).map((e) => e.name);
  expect(names).toEqual(['big', '.wh.gone']);
  await new Promise((r) => setImmediate(r));
  expect(host.outstanding()).toBe(0);
});

test('a diff stream destroyed half-way still puts both layers back, exactly once', async () => {
  const stream = await naive.diff('child');
  await new Promise<void>((resolve) => stream.once('readable', () => resolve()));
  stream.destroy();
  await new Promise<void>((resolve) => stream.once('close', () => resolve()));
  await new Promise((r) => setImmediate(r));
  expect(host.outstanding()).toBe(0);
  expect(host.counts.get('base')).toBe(0); // not negative: put would have thrown ERR_NOT_MOUNTED
});

test('a failed get of the parent puts the layer back', async () => {
  const lone = new DirHost(work, { child: 'missing' });
  await expect(new NaiveDiff(lone).diff('child')).rejects.toMatchObject({ code: 'ERR_LAYER_NOT_FOUND' });
  expect(lone.outstanding()).toBe(0);
});

test('applyDiff extracts into the layer and puts it back, also when the tar is corrupt', async () => {
  const bytes = await naive.applyDiff('base', null, Readable.from([await tarOf([{ name: 'new', content: 'abc' }, { name: '.wh.kept' }])]));
  expect(bytes).toBe(3);
  expect((await readdir(join(work, 'base'))).sort()).toEqual(['gone', 'new']);
  expect(await readFile(join(work, 'base', 'new'), 'utf8')).toBe('abc');
  const tar = await tarOf([{ name: 'x', content: Buffer.alloc(4096) }]);
  await expect(naive.applyDiff('base', null, Readable.from([tar.subarray(0, 1000)]))).rejects.toMatchObject({ code: 'ERR_INVALID_ARCHIVE' });
  expect(host.outstanding()).toBe(0);
});

test('invalid ids are refused before any get', async () => {
  await expect(naive.diff('../x')).rejects.toMatchObject({ code: 'ERR_INVALID_ID' });
  await expect(naive.changes('child', '../x')).rejects.toMatchObject({ code: 'ERR_INVALID_ID' });
  expect(host.counts.size).toBe(0);
});
