// The cairn CLI next to a runtime (issue 16): a runtime process holds the root open with
// a container mounted; `cairn mount C`, then images, layers, info, du and a library
// process that opens and cleans up leave C mounted; `cairn umount C` unmounts it.
// --lock-timeout bounds a wait for another process's lock.
import { execFile, execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCodes, openDriver, readMountInfo, StoreLocks } from '@cairnfs/core';
import { LayerStore } from '@cairnfs/image';
import { RemoteDriver, sampleLayers, tarDir, writeDockerSave } from '@cairnfs/testkit';
import 'cairnfs';

const repo = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', '..', '..');
const bin = join(repo, 'packages/cairnfs/dist/cli/main.js');

interface Run { code: number; stdout: string; stderr: string }
function cairn(root: string, ...args: string[]): Promise<Run> {
  return new Promise((done) => {
    execFile(process.execPath, [bin, '--root', root, ...args], { env: { ...process.env, NODE_OPTIONS: '' } },
      (err, stdout, stderr) => done({ code: err ? (err as { code?: number }).code ?? 1 : 0, stdout, stderr }));
  });
}
const exitFor = (code: (typeof ErrorCodes)[number]) => 10 + ErrorCodes.indexOf(code);
const mountsAt = async (path: string) => (await readMountInfo()).filter((m) => m.mountPoint === path).length;

let root: string;
let work: string;
let runtime: RemoteDriver | null = null;

beforeAll(() => {
  execFileSync(process.execPath, [join(repo, 'node_modules/typescript/bin/tsc'), '-b', 'packages/cairnfs'], { cwd: repo });
}, 180_000);

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'cairn-cli-mp-'));
  work = await mkdtemp(join(tmpdir(), 'cairn-cli-mp-src-'));
  await writeDockerSave(join(work, 'img'), await sampleLayers(), 'demo:1', 'gzip');
  tarDir(join(work, 'img'), join(work, 'demo.tar'));
});
afterEach(async () => {
  runtime?.kill();
  await runtime?.exited;
  runtime = null;
  await cairn(root, 'umount', 'C');
  await (await openDriver({ root })).cleanup();
  await rm(root, { recursive: true, force: true });
  await rm(work, { recursive: true, force: true });
});

test('cairn mount C lasts through other commands, a library open+cleanup and a runtime holding the root, until cairn umount C', async () => {
  expect((await cairn(root, 'import', join(work, 'demo.tar'))).code).toBe(0);
  expect((await cairn(root, 'create', 'demo:1', 'C')).code).toBe(0);
  expect((await cairn(root, 'create', 'demo:1', 'R')).code).toBe(0);
  // The runtime: another process with the root open, its own container mounted.
  const store = await LayerStore.open(await openDriver({ root }));
  const mountOf = (name: string) => store.container(name).mountId;
  runtime = await RemoteDriver.start('overlay2', root);
  const runtimeRoot = await runtime.call<string>('get', mountOf('R'));
  expect(await mountsAt(runtimeRoot)).toBe(1);

  const mounted = await cairn(root, 'mount', 'C');
  expect(mounted.code).toBe(0);
  const path = mounted.stdout.trim();
  expect(await readFile(join(path, 'etc/os-release'), 'utf8')).toBe('ID=cairn\n');
  expect(await mountsAt(path)).toBe(1);
  // The mount is the store's, not the (exited) CLI process's: the runtime sees it held once.
  expect(await runtime.call('mountCount', mountOf('C'))).toBe(1);

  for (const args of [['images'], ['layers'], ['info'], ['du'], ['--json', 'layers'], ['changes', 'C']]) {
    const r = await cairn(root, ...args);
    expect({ args, code: r.code, stderr: r.stderr }).toEqual({ args, code: 0, stderr: '' });
    expect(await mountsAt(path)).toBe(1);
  }
  // A library process that opens the root and cleans up, and one here in the test.
  const library = await RemoteDriver.start('overlay2', root);
  expect(await library.call('exists', mountOf('C'))).toBe(true);
  expect(await library.exit()).toBe(0);
  const here = await openDriver({ root });
  await (await LayerStore.open(here)).close();
  await here.cleanup();
  expect(await mountsAt(path)).toBe(1);
  expect(await readFile(join(path, 'etc/os-release'), 'utf8')).toBe('ID=cairn\n');

  // Removing a mounted container is refused; umount ends the mount; a second umount has nothing to end.
  const rmC = await cairn(root, 'rm', 'C');
  expect(rmC.code).toBe(exitFor('ERR_LAYER_IN_USE'));
  expect(rmC.stderr).toMatch(/cli-mount:C/);
  expect((await cairn(root, 'umount', 'C')).code).toBe(0);
  expect(await mountsAt(path)).toBe(0);
  expect((await cairn(root, 'umount', 'C')).code).toBe(exitFor('ERR_NOT_MOUNTED'));
  expect((await cairn(root, 'rm', 'C')).code).toBe(0);

  // The runtime's own mount was never touched.
  expect(await mountsAt(runtimeRoot)).toBe(1);
  expect(await runtime.exit()).toBe(0);
  expect(await mountsAt(runtimeRoot)).toBe(0);
  await store.close();
  await store.driver.cleanup();
}, 120_000);

test('--lock-timeout bounds the wait for a lock another process holds: ERR_LOCKED naming it, then the command works once it is free', async () => {
  expect((await cairn(root, 'import', join(work, 'demo.tar'))).code).toBe(0);
  const locks = new StoreLocks(join(root, 'overlay2'), { timeoutMs: 0, what: 'test' });
  let release!: () => void;
  const held = new Promise<void>((r) => { release = r; });
  const holding = locks.write('hold the table for a test', () => held);
  await new Promise((r) => setTimeout(r, 50));
  const started = Date.now();
  const r = await cairn(root, '--lock-timeout', '300', 'images');
  expect(r.code).toBe(exitFor('ERR_LOCKED'));
  expect(r.stderr).toContain(`process ${process.pid} (exclusive: hold the table for a test`);
  expect(r.stderr).toMatch(/waited 300 ms/);
  expect(Date.now() - started).toBeLessThan(10_000);
  expect((await cairn(root, '--lock-timeout', 'soon', 'images')).code).toBe(exitFor('ERR_INVALID_OPTION'));
  const waiting = cairn(root, '--lock-timeout', '20000', 'images');
  setTimeout(release, 500);
  const ok = await waiting;
  expect(ok.code).toBe(0);
  expect(ok.stdout).toMatch(/demo:1/);
  await holding;
  await locks.close();
}, 60_000);
