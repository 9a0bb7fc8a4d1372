import { execFile, execFileSync } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCodes } from '@cairnfs/core';
import { readTar } from '@cairnfs/archive';
import { Readable } from 'node:stream';
import { fileEntry, packedTarOf as tarOf, sampleLayers, sha, tarDir, writeDockerSave } from '@cairnfs/testkit';

const repo = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', '..', '..');
const bin = join(repo, 'packages/cairnfs/dist/cli/main.js');

interface Run { code: number; stdout: Buffer; stderr: string }
function cairn(root: string, ...args: string[]): Promise<Run> {
  return new Promise((done) => {
    execFile(process.execPath, [bin, '--root', root, ...args], { encoding: 'buffer', env: { ...process.env, NODE_OPTIONS: '' }, maxBuffer: 64 << 20 },
      (err, stdout, stderr) => done({ code: err ? (err as { code?: number }).code ?? 1 : 0, stdout, stderr: stderr.toString() }));
  });
}
/** Runs cairn with its stdout on a terminal (a pty made by script(1)); stdout+stderr come back together. */
function onTerminal(root: string, ...args: string[]): Promise<{ code: number; output: string }> {
  const line = [process.execPath, bin, '--root', root, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  return new Promise((done) => {
    execFile('script', ['-qec', line, '/dev/null'], { env: { ...process.env, NODE_OPTIONS: '' } },
      (err, stdout) => done({ code: err ? (err as { code?: number }).code ?? 1 : 0, output: String(stdout) }));
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
  expect(JSON.parse((await cairn(root, '--json', 'info')).stdout.toString())).toMatchObject({ driver: 'overlay2', images: 1, layers: 3, containers: 0 });

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

test('doctor names the chosen driver and gives a reason for every other; gc reports', async () => {
  const doc = JSON.parse((await cairn(root, '--json', 'doctor')).stdout.toString());
  expect(doc.filter((r: { status: string }) => r.status === 'chosen')).toHaveLength(1);
  for (const r of doc) if (r.status !== 'chosen') expect(r.reason).not.toBe('');
  await cairn(root, '--driver', 'vfs', 'import', join(work, 'demo.tar'));
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

test('--version prints the package version; every subcommand help lists the global flags', async () => {
  const v = await cairn(root, '--version');
  expect(v.code).toBe(0);
  expect(v.stdout.toString().trim()).toBe(JSON.parse(readFileSync(join(repo, 'packages/cairnfs/package.json'), 'utf8')).version);
  for (const sub of ['images', 'import', 'ps', 'du', 'export']) {
    const help = (await cairn(root, sub, '--help')).stdout.toString();
    expect(help).toMatch(/^Global Options:$/m);
    for (const flag of ['--root', '--driver', '--storage-opt', '--json', '--bytes', '--progress']) expect(help).toContain(flag);
  }
});

test('listings: -q gives bare ids, --format json typed values, tables human sizes (raw with --bytes); ps lists containers', async () => {
  expect((await cairn(root, '--driver', 'vfs', 'import', '--tag', 'demo:2', join(work, 'demo.tar'))).code).toBe(0);
  expect((await cairn(root, '--driver', 'vfs', 'create', 'demo:1', 'c1')).code).toBe(0);
  const vfs = (...args: string[]) => cairn(root, '--driver', 'vfs', ...args);
  const size = 300_000 + 9 + 6 + 4 + 8;

  const [img] = JSON.parse((await vfs('images', '--format', 'json')).stdout.toString());
  expect(img).toEqual({ id: expect.stringMatching(/^sha256:[0-9a-f]{64}$/), tags: ['demo:1', 'demo:2'], layers: 3, size, diffIds: layers.map(sha), chainIds: expect.any(Array) });
  expect((await vfs('images', '-q')).stdout.toString()).toBe(`${img.id.slice(7, 19)}\n`);
  expect((await vfs('images', '-q', '--no-trunc')).stdout.toString()).toBe(`${img.id}\n`);
  const table = (await vfs('images')).stdout.toString().split('\n');
  expect(table[0]).toMatch(/^ID +TAGS +LAYERS +SIZE$/);
  expect(table[1]).toMatch(new RegExp(`^${img.id.slice(7, 19)} +demo:1,demo:2 +3 +300kB$`));
  expect((await vfs('--bytes', 'images')).stdout.toString()).toMatch(new RegExp(` ${size}\\n$`));

  const ls = JSON.parse((await vfs('layers', '--format', 'json')).stdout.toString());
  for (const l of ls) {
    expect(typeof l.size).toBe('number');
    expect(typeof l.refcount).toBe('number');
    expect(typeof l.exact).toBe('boolean');
  }
  expect((await vfs('layers', '-q')).stdout.toString().trim().split('\n').sort()).toEqual(ls.map((l: { chainId: string }) => l.chainId).sort());

  const ps = await vfs('ps');
  expect(ps.stdout.toString()).toMatch(/^NAME +IMAGE +MOUNTID\nc1 +demo:1 +[0-9a-f]{12}\n$/);
  expect((await vfs('ps', '-q')).stdout.toString()).toBe('c1\n');
  const [c] = JSON.parse((await vfs('--json', 'ps', '--size')).stdout.toString());
  expect(c).toEqual({ name: 'c1', image: img.id, imageTags: ['demo:1', 'demo:2'], mountId: expect.stringMatching(/^[0-9a-f]{64}$/), parent: ls.find((l: { parent: string | null; chainId: string }) => !ls.some((o: { parent: string | null }) => o.parent === l.chainId)).chainId, size: 0 });
  expect((await vfs('ps', '--format', 'yaml')).code).toBe(2);
});

test('du splits images into shared and unique bytes and counts what is reclaimable, each byte once', async () => {
  // Two images share their first two layers; a container stands on the first and wrote 3 bytes.
  const extra = await tarOf([fileEntry('b.txt', 'bbbbb')]);
  await writeDockerSave(join(work, 'img-b'), [layers[0]!, layers[1]!, extra], 'b:1');
  tarDir(join(work, 'img-b'), join(work, 'b.tar'));
  const vfs = (...args: string[]) => cairn(root, '--driver', 'vfs', ...args);
  expect((await vfs('import', join(work, 'demo.tar'))).code).toBe(0);
  expect((await vfs('import', join(work, 'b.tar'))).code).toBe(0);
  expect((await vfs('create', 'demo:1', 'c1')).code).toBe(0);
  const rootfs = (await vfs('mount', 'c1')).stdout.toString().trim();
  await writeFile(join(rootfs, 'hi.txt'), 'hi\n'); // vfs mounts nothing: the path is the layer itself

  const [l0, l1, l2, l3] = [300_000 + 9 + 6, 4, 8, 5];
  const du = JSON.parse((await vfs('du', '--format', 'json')).stdout.toString());
  expect(du.images).toMatchObject({ total: 2, active: 1, size: l0 + l1 + l2 + l3, reclaimable: l3 });
  const byTag = Object.fromEntries(du.images.items.map((i: { tags: string[] }) => [i.tags[0], i]));
  expect(byTag['demo:1']).toMatchObject({ size: l0 + l1 + l2, shared: l0 + l1, unique: l2, containers: 1 });
  expect(byTag['b:1']).toMatchObject({ size: l0 + l1 + l3, shared: l0 + l1, unique: l3, containers: 0 });
  expect(du.containers).toMatchObject({ total: 1, size: 3, reclaimable: 3, items: [{ name: 'c1', image: byTag['demo:1'].id, size: 3 }] });
  expect(du.unreferencedLayers).toEqual({ total: 0, size: 0, reclaimable: 0 });
  expect(du.total).toEqual({ size: l0 + l1 + l2 + l3 + 3, reclaimable: l3 + 3 });

  const table = (await vfs('--bytes', 'du', '-v')).stdout.toString();
  expect(table).toMatch(new RegExp(`^images +2 +1 +${l0 + l1 + l2 + l3} +${l3} \\(0%\\)$`, 'm'));
  expect(table).toMatch(new RegExp(`^total +${l0 + l1 + l2 + l3 + 3} +${l3 + 3} \\(0%\\)$`, 'm'));
  expect(table).toMatch(new RegExp(`^[0-9a-f]{12} +b:1 +${l0 + l1 + l3} +${l0 + l1} +${l3} +0$`, 'm'));
  expect((await vfs('du')).stdout.toString()).toMatch(/^images +2 +1 +300kB +5B \(0%\)$/m);
}, 60_000);

test('export and diff refuse to write a tar to a terminal, and write -o FILE whole or not at all', async () => {
  expect((await cairn(root, '--driver', 'vfs', 'import', join(work, 'demo.tar'))).code).toBe(0);
  expect((await cairn(root, '--driver', 'vfs', 'create', 'demo:1', 'c1')).code).toBe(0);
  for (const args of [['export', 'demo:1'], ['diff', 'c1']]) {
    const tty = await onTerminal(root, '--driver', 'vfs', ...args);
    expect(tty.code).toBe(2);
    expect(tty.output).toMatch(/refusing to write an? [a-z ]+ to a terminal: give -o FILE or redirect stdout/);
  }
  const out = join(work, 'out.tar');
  expect((await cairn(root, '--driver', 'vfs', 'export', '-o', out, 'demo:1')).code).toBe(0);
  const names: string[] = [];
  for await (const item of readTar(Readable.from([await readFile(out)]))) { names.push(item.header.name); for await (const _ of item.body) { /* drain */ } }
  expect(names).toContain('manifest.json');
  expect((await onTerminal(root, '--driver', 'vfs', 'diff', 'c1', '-o', join(work, 'c1.tar'))).code).toBe(0);
  expect((await readFile(join(work, 'c1.tar'))).length % 512).toBe(0);
  // A failed export leaves neither the file nor its temporary.
  const missing = await cairn(root, '--driver', 'vfs', 'export', '-o', join(work, 'bad.tar'), 'nope:1');
  expect(missing.code).toBe(exitFor('ERR_IMAGE_NOT_FOUND'));
  expect((await readdir(work)).filter((f) => f.includes('bad.tar'))).toEqual([]);
}, 60_000);

test('--progress plain and json give rate and time left per layer; none is silent', async () => {
  const plain = await cairn(root, '--driver', 'vfs', '--progress', 'plain', 'import', join(work, 'demo.tar'));
  expect(plain.code).toBe(0);
  expect(plain.stderr).toMatch(/^layer sha256:[0-9a-f]{64} applied \(3\/3, [0-9.]+[kM]?B\/[0-9.]+[kM]?B, [0-9.]+[kMG]?B\/s, \d+s left\)$/m);
  await cairn(root, '--driver', 'vfs', 'rmi', 'demo:1');
  const json = await cairn(root, '--driver', 'vfs', '--progress=json', 'import', join(work, 'demo.tar'));
  const events = json.stderr.trim().split('\n').map((l) => JSON.parse(l));
  const layerEvents = events.filter((e) => e.event === 'layer');
  expect(layerEvents).toHaveLength(3);
  for (const e of events) {
    expect(e).toEqual({ event: expect.any(String), image: expect.stringMatching(/^sha256:/), ...(e.event === 'layer' ? { layer: expect.stringMatching(/^sha256:/) } : {}),
      layersDone: expect.any(Number), layersTotal: 3, bytesDone: expect.any(Number), bytesTotal: expect.any(Number),
      bytesPerSecond: e.bytesPerSecond === null ? null : expect.any(Number), etaSeconds: e.etaSeconds === null ? null : expect.any(Number) });
  }
  expect(layerEvents.at(-1)).toMatchObject({ layersDone: 3, etaSeconds: 0 });
  await cairn(root, '--driver', 'vfs', 'rmi', 'demo:1');
  expect((await cairn(root, '--driver', 'vfs', '--progress', 'none', 'import', join(work, 'demo.tar'))).stderr).toBe('');
});
