// The registry example of docs/images.md, run as written against a private TLS registry
// with htpasswd auth (only the registry address, CA file and storage root are swapped in).
import { readFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LayerStore, login, openDriver } from 'cairnfs';
import { describeBackend, makeTestCa, registryMissing, startRegistry, type RegistryFixture } from '@cairnfs/testkit';
import { sampleLayers } from '@cairnfs/testkit';
import { seedDockerArchive } from './registry-fixture.js';

const repo = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', '..', '..');

describeBackend('registry', registryMissing(), () => {
  let work: string;
  let reg: RegistryFixture;
  let caFile: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'cairn-docs-'));
    const ca = await makeTestCa(join(work, 'ca'));
    caFile = join(work, 'ca.pem');
    await writeFile(caFile, ca.caPem);
    reg = await startRegistry({ tls: ca, htpasswd: { alice: 'wonderland' } });
    await seedDockerArchive(reg, work, 'library/busybox:1.36', await sampleLayers(), { username: 'alice', password: 'wonderland' });
  }, 60_000);
  afterAll(async () => {
    await reg?.stop();
    await rm(work, { recursive: true, force: true });
  });

  test('the pull/push/login example in docs/images.md runs and does what its comments say', async () => {
    const doc = await readFile(join(repo, 'docs/images.md'), 'utf8');
    const block = /<!-- example: registry -->\n```ts\n([\s\S]*?)```/.exec(doc)![1]!;
    const root = join(work, 'root');
    const code = block
      .split('\n').filter((l) => !l.startsWith('import ')).join('\n')
      .replaceAll('localhost:5000', reg.host).replaceAll('/etc/cairn/registry-ca.pem', caFile).replaceAll('/var/lib/cairn', root);
    const lines: string[] = [];
    const console = { log: (...a: unknown[]) => lines.push(a.map(String).join(' ')) };
    const saved = process.env.DOCKER_CONFIG;
    process.env.DOCKER_CONFIG = join(work, 'docker');
    const AsyncFunction = Object.getPrototypeOf(async () => undefined).constructor as new (...args: string[]) => (...a: unknown[]) => Promise<unknown>;
    let driverRoot: string | undefined;
    let opened: Awaited<ReturnType<typeof openDriver>> | undefined;
    try {
      await new AsyncFunction('readFile', 'openDriver', 'LayerStore', 'login', 'console', code)(readFile, async (o: { root: string }) => { driverRoot = o.root; opened = await openDriver(o); return opened; }, LayerStore, login, console);
    } finally {
      await opened?.cleanup();
      if (saved === undefined) delete process.env.DOCKER_CONFIG; else process.env.DOCKER_CONFIG = saved;
    }
    expect(driverRoot).toBe(root);
    expect(lines.filter((l) => /^sha256:[0-9a-f]{64} \d+ bytes$/.test(l))).toHaveLength(3);
    expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^sha256:[0-9a-f]{64} ${reg.host}/library/busybox:1.36$`)));
    expect(lines[lines.length - 1]).toMatch(/^sha256:[0-9a-f]{64} 3$/); // 3 layers mounted
    const cfg = JSON.parse(await readFile(join(work, 'docker', 'config.json'), 'utf8')) as { auths: Record<string, unknown> };
    expect(Object.keys(cfg.auths)).toEqual([reg.host]);
  });
});
