import { execFile, execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCodes } from '@cairnfs/core';
import { readTar } from '@cairnfs/archive';
import { Readable } from 'node:stream';
import { sampleLayers, sha, tarDir, writeDockerSave } from '@cairnfs/testkit';

const repo = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', '..', '..');
const bin = join(repo, 'packages/cairnfs/dist/cli/main.js');

interface Run { code: number; stdout: Buffer; stderr: string }
function cairn(root: string, ...args: string[]): Promise<Run> {
  return new Promise((done) => {
    execFile(process.execPath, [bin, '--root', root, ...args], { encoding: 'buffer', env: { ...process.env, NODE_OPTIONS: '' }, maxBuffer: 64 << 20 },
      (err, stdout, stderr) => done({ code: err ? (err as { code?: number }).code ?? 1 : 0, stdout, stderr: stderr.toString() }));
  });
}
const exitFor = (code: (typeof ErrorCodes)[number]) => 10 + ErrorCodes.indexOf(code);

let root: string;
let work: string;
let layers: Buffer[];

beforeAll(() => {
  // The test runs the real binary, so it needs the build (CI builds first; this keeps a local run honest).
  execFileSync(process.execPath, [join(repo, 'node_modules/typescript/bin/tsc'), '-b', 'packages/cairnfs'], { cwd: repo });
}, 180_000);

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'cairn-cli-'));
  work = await mkdtemp(join(tmpdir(), 'cairn-cli-src-'));
  layers = await sampleLayers();
  await writeDockerSave(join(work, 'img'), layers, 'demo:1', 'gzip');
  tarDir(join(work, 'img'), join(work, 'demo.tar'));
});
afterEach(async () => {
  await cairn(root, 'umount', 'c1'); // in case a test failed while mounted
  await rm(root, { recursive: true, force: true });
  await rm(work, { recursive: true, force: true });
});

test('--help lists every command and exits 0; an unknown command is a usage error (2)', async () => {
  const help = await cairn(root, '--help');
  expect(help.code).toBe(0);
  for (const c of ['probe', 'doctor', 'info', 'import', 'images', 'layers', 'create', 'mount', 'umount', 'changes', 'diff', 'export', 'rm', 'rmi', 'du', 'gc', 'migrate']) {
    expect(help.stdout.toString()).toMatch(new RegExp(`^  ${c}\\b`, 'm'));
  }
  expect((await cairn(root, 'import', '--help')).stdout.toString()).toMatch(/docker save tarball/);
  expect((await cairn(root, 'frobnicate')).code).toBe(2);
});

test('import, list, create, mount, write, umount, changes, diff, export, rm, rmi: the whole life of an image on overlay2', async () => {
  const imp = await cairn(root, 'import', join(work, 'demo.tar'));
  expect(imp.code).toBe(0);
  expect(imp.stderr).toMatch(/layer sha256:[0-9a-f]{64} applied \(\d\/3/); // plain progress lines when not a terminal
  const images = JSON.parse((await cairn(root, '--json', 'images')).stdout.toString());
  expect(images).toEqual([expect.objectContaining({ tags: ['demo:1'], layers: 3 })]);
  const ls = JSON.parse((await cairn(root, '--json', 'layers')).stdout.toString());
  expect(ls.map((l: { diffId: string }) => l.diffId).sort()).toEqual(layers.map(sha).sort());
  expect(JSON.parse((await cairn(root, '--json', 'info')).stdout.toString())['Storage Driver']).toBe('overlay2');

  expect((await cairn(root, 'create', 'demo:1', 'c1')).code).toBe(0);
  const mount = await cairn(root, 'mount', 'c1');
  expect(mount.code).toBe(0);
  const rootfs = mount.stdout.toString().trim();
  expect(await readFile(join(rootfs, 'etc/os-release'), 'utf8')).toBe('ID=cairn\n');
  await writeFile(join(rootfs, 'hello.txt'), 'hi\n');
  expect((await cairn(root, 'umount', 'c1')).code).toBe(0);
  expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(rootfs);

  expect((await cairn(root, 'changes', 'c1')).stdout.toString()).toBe('A /hello.txt\n');
  const diff = await cairn(root, 'diff', 'c1');
  const names: string[] = [];
  for await (const item of readTar(Readable.from([diff.stdout]))) names.push(item.header.name);
  expect(names).toEqual(['hello.txt']);

  const exp = await cairn(root, 'export', 'demo:1');
  expect(exp.code).toBe(0);
  const blobs = new Map<string, string>();
  for await (const item of readTar(Readable.from([exp.stdout]))) {
    const parts: Buffer[] = [];
    for await (const c of item.body) parts.push(Buffer.from(c));
    blobs.set(item.header.name, sha(Buffer.concat(parts)));
  }
  for (const l of layers) expect(blobs.get(`blobs/sha256/${sha(l).slice(7)}`)).toBe(sha(l)); // byte-exact layers
  expect(blobs.has('manifest.json')).toBe(true);

  const inUse = await cairn(root, 'rmi', 'demo:1');
  expect(inUse.code).toBe(exitFor('ERR_LAYER_IN_USE'));
  expect(inUse.stderr).toMatch(/ERR_LAYER_IN_USE: .*cairn rm/);
  expect((await cairn(root, 'rm', 'c1')).code).toBe(0);
  const rmi = await cairn(root, 'rmi', 'demo:1');
  expect(rmi.stdout.toString()).toMatch(/Untagged: demo:1\nDeleted: sha256:/);
  expect((rmi.stdout.toString().match(/Deleted layer/g) ?? []).length).toBe(3);
  expect(JSON.parse((await cairn(root, '--json', 'layers')).stdout.toString())).toEqual([]);
}, 60_000);

test('errors exit with the code of their CairnError and a message saying what to do', async () => {
  const missing = await cairn(root, 'create', 'nope:1', 'c1');
  expect(missing.code).toBe(exitFor('ERR_IMAGE_NOT_FOUND'));
  expect(missing.stderr).toMatch(/no image nope:1/);
  const badName = await cairn(root, '--driver', 'vfs', 'create', 'demo:1', '../x');
  expect(badName.code).toBe(exitFor('ERR_INVALID_ID'));
  expect((await cairn(root, '--driver', 'nosuch', 'images')).code).toBe(exitFor('ERR_DRIVER_NOT_FOUND'));
  expect((await cairn(root, '--storage-opt', 'junk', 'images')).code).toBe(exitFor('ERR_INVALID_OPTION'));
  await writeFile(join(work, 'junk.tar'), Buffer.alloc(2048, 1));
  expect((await cairn(root, 'import', join(work, 'junk.tar'))).code).toBe(exitFor('ERR_INVALID_ARCHIVE'));
  const bomb = await cairn(root, 'import', '--max-uncompressed', '64K', join(work, 'demo.tar'));
  expect(bomb.code).toBe(exitFor('ERR_INVALID_ARCHIVE'));
  expect(bomb.stderr).toMatch(/maxUncompressedBytes/);
  expect((await cairn(root, 'import', '--max-uncompressed', 'lots', join(work, 'demo.tar'))).code).toBe(exitFor('ERR_INVALID_OPTION'));
});

test('doctor names the chosen driver and gives a reason for every other; du and gc report', async () => {
  const doc = JSON.parse((await cairn(root, '--json', 'doctor')).stdout.toString());
  expect(doc.filter((r: { status: string }) => r.status === 'chosen')).toHaveLength(1);
  for (const r of doc) if (r.status !== 'chosen') expect(r.reason).not.toBe('');
  await cairn(root, '--driver', 'vfs', 'import', join(work, 'demo.tar'));
  const du = JSON.parse((await cairn(root, '--driver', 'vfs', '--json', 'du')).stdout.toString());
  expect(du[0]).toEqual({ kind: 'layers', count: 3, bytes: 300_000 + 9 + 6 + 4 + 8 });
  await cairn(root, '--driver', 'vfs', 'rmi', 'demo:1');
  expect((await cairn(root, '--driver', 'vfs', 'gc')).stdout.toString()).toMatch(/removed 0 images/);
});

test('cairn migrate --to vfs moves an overlay2 store (images and a container) and the image reads the same on vfs', async () => {
  expect((await cairn(root, 'import', join(work, 'demo.tar'))).code).toBe(0);
  expect((await cairn(root, 'create', 'demo:1', 'c1')).code).toBe(0);
  const mounted = (await cairn(root, 'mount', 'c1')).stdout.toString().trim();
  await writeFile(join(mounted, 'made-in-container'), 'x');
  expect((await cairn(root, 'umount', 'c1')).code).toBe(0);
  const before = (await cairn(root, 'changes', 'c1')).stdout.toString();

  const m = await cairn(root, 'migrate', '--to', 'vfs');
  expect(m.stderr).toMatch(/^\[1\/4\] [0-9a-f]{64} copied/m); // progress lines go to stderr
  expect(m.code).toBe(0);
  expect(m.stdout.toString()).toMatch(/migrated 4 layers from overlay2 to vfs \(4 copied, 0 already done/);
  // Both stores now hold layers: auto-selection refuses to guess, --driver picks.
  expect((await cairn(root, 'images')).code).toBe(exitFor('ERR_MULTIPLE_PRIOR_DRIVERS'));
  const images = JSON.parse((await cairn(root, '--driver', 'vfs', '--json', 'images')).stdout.toString());
  expect(images).toEqual([expect.objectContaining({ tags: ['demo:1'], layers: 3 })]);
  expect((await cairn(root, '--driver', 'vfs', 'changes', 'c1')).stdout.toString()).toBe(before);
  // A second run finds everything verified and copies nothing.
  const again = await cairn(root, 'migrate', '--from', 'overlay2', '--to', 'vfs');
  expect(again.stdout.toString()).toMatch(/\(0 copied, 4 already done/);
}, 120_000);
