// The registry verbs of the real `cairn` binary against a real TLS registry with htpasswd
// auth: login writes docker's config.json, push and pull use it, failures exit with the
// code of their CairnError.
import { execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCodes } from '@cairnfs/core';
import { LayerStore } from '@cairnfs/image';
import { openDriver } from 'cairnfs';
import { describeBackend, makeTestCa, registryMissing, relay, startFaultProxy, startRegistry, type RegistryFixture } from '@cairnfs/testkit';
import { dirEntry, fileEntry, sampleLayers, tarDir, packedTarOf as tarOf, writeDockerSave } from '@cairnfs/testkit';

const repo = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', '..', '..');
const bin = join(repo, 'packages/cairnfs/dist/cli/main.js');
const exitFor = (code: (typeof ErrorCodes)[number]) => 10 + ErrorCodes.indexOf(code);

interface Run { code: number; stdout: string; stderr: string }

describeBackend('registry', registryMissing(), () => {
  let work: string;
  let reg: RegistryFixture;
  let caFile: string;
  let env: NodeJS.ProcessEnv;
  let id: string;

  function cairn(root: string, args: string[], input?: string): Promise<Run> {
    return new Promise((done) => {
      const p = execFile(process.execPath, [bin, '--root', root, ...args], { encoding: 'utf8', env, maxBuffer: 16 << 20 },
        (err, stdout, stderr) => done({ code: err ? (err as { code?: number }).code ?? 1 : 0, stdout, stderr }));
      p.stdin!.end(input ?? '');
    });
  }

  beforeAll(async () => {
    execFileSync(process.execPath, [join(repo, 'node_modules/typescript/bin/tsc'), '-b', 'packages/cairnfs'], { cwd: repo });
    work = await mkdtemp(join(tmpdir(), 'cairn-cli-reg-'));
    const ca = await makeTestCa(join(work, 'ca'));
    caFile = join(work, 'ca.crt');
    await writeFile(caFile, ca.caPem);
    reg = await startRegistry({ tls: ca, htpasswd: { alice: 'wonderland' } });
    id = await writeDockerSave(join(work, 'img'), await sampleLayers(), 'demo:1', 'gzip');
    tarDir(join(work, 'img'), join(work, 'demo.tar'));
    env = { PATH: process.env.PATH, HOME: work, DOCKER_CONFIG: join(work, 'docker'), NODE_OPTIONS: '' };
  }, 180_000);
  afterAll(async () => {
    await reg?.stop();
    await rm(work, { recursive: true, force: true });
  });

  test('login (password on stdin) → push → pull in another store; failures exit with their CairnError codes', async () => {
    const a = await mkdtemp(join(work, 'root-a-'));
    const b = await mkdtemp(join(work, 'root-b-'));
    const bad = await cairn(a, ['login', reg.host, '-u', 'alice', '--password-stdin', '--tls-ca', caFile], 'nope\n');
    expect(bad.code).toBe(exitFor('ERR_AUTH'));
    expect(bad.stderr).toMatch(/^cairn: ERR_AUTH: /);

    const ok = await cairn(a, ['login', reg.host, '-u', 'alice', '--password-stdin', '--tls-ca', caFile], 'wonderland\n');
    expect(ok).toMatchObject({ code: 0, stdout: `Login Succeeded: ${reg.host} (credentials stored in ${join(work, 'docker', 'config.json')})\n` });
    const cfg = JSON.parse(await readFile(join(work, 'docker', 'config.json'), 'utf8')) as { auths: Record<string, { auth: string }> };
    expect(Buffer.from(cfg.auths[reg.host]!.auth, 'base64').toString()).toBe('alice:wonderland');

    expect((await cairn(a, ['import', join(work, 'demo.tar')])).code).toBe(0);
    const push = await cairn(a, ['push', 'demo:1', `${reg.host}/cli/app:1`, '--tls-ca', caFile]);
    expect(push.code).toBe(0);
    expect(push.stdout).toMatch(new RegExp(`^${reg.host}/cli/app:1: digest sha256:[0-9a-f]{64} \\(4 blobs uploaded, 0 already there, 0 mounted\\)\\n$`));
    expect(push.stderr.split('\n').filter((l) => / pushed \(/.test(l))).toHaveLength(3);

    const pull = await cairn(b, ['--json', 'pull', `${reg.host}/cli/app:1`, '--tls-ca', caFile]);
    expect(pull.code).toBe(0);
    expect(JSON.parse(pull.stdout)).toEqual([{ id, tags: `${reg.host}/cli/app:1`, layers: 3 }]);
    expect(pull.stderr.split('\n').filter((l) => /^layer [0-9a-f]{12} applied \(\d\/3, /.test(l))).toHaveLength(3);
    const again = await cairn(b, ['pull', `${reg.host}/cli/app:1`, '--tls-ca', caFile]);
    expect(again.code).toBe(0);
    expect(again.stderr.split('\n').filter((l) => /already present/.test(l))).toHaveLength(3);

    expect((await cairn(b, ['pull', `${reg.host}/cli/none:1`, '--tls-ca', caFile])).code).toBe(exitFor('ERR_IMAGE_NOT_FOUND'));
    expect((await cairn(b, ['pull', `${reg.host}/cli/app:1`])).code).toBe(exitFor('ERR_NETWORK')); // untrusted CA
    expect((await cairn(b, ['pull', 'Not A Ref'])).code).toBe(exitFor('ERR_INVALID_OPTION'));

    expect((await cairn(b, ['logout', reg.host])).stdout).toBe(`Removed login credentials for ${reg.host}\n`);
    expect((await cairn(b, ['pull', `${reg.host}/cli/app:2`, '--tls-ca', caFile])).code).toBe(exitFor('ERR_AUTH'));
  });

  test('a pull killed (SIGKILL) mid-blob: the next open removes its half-made layers, the next pull resumes the blob with Range', async () => {
    const plain = await startRegistry();
    const proxy = await startFaultProxy(plain.url);
    const root = await mkdtemp(join(work, 'root-kill-'));
    try {
      const layers = [...await sampleLayers(), await tarOf([dirEntry('big'), fileEntry('big/random.bin', randomBytes(6 << 20))])];
      const dir = await mkdtemp(join(work, 'kill-img-'));
      const killId = await writeDockerSave(dir, layers, 'kill:1', 'none');
      tarDir(dir, `${dir}.tar`);
      execFileSync('skopeo', ['--insecure-policy', 'copy', '-q', '--dest-tls-verify=false', `docker-archive:${dir}.tar`, `docker://${plain.host}/kill/app:1`], { env: { PATH: process.env.PATH, HOME: work } });
      const raw = JSON.parse(execFileSync('skopeo', ['--insecure-policy', 'inspect', '--raw', '--tls-verify=false', `docker://${plain.host}/kill/app:1`], { encoding: 'utf8', env: { PATH: process.env.PATH, HOME: work } })) as { layers: Array<{ digest: string; size: number }> };
      const big = raw.layers.reduce((a, b) => (b.size > a.size ? b : a)).digest;
      let sentHalf: () => void = () => undefined;
      const half = new Promise<void>((r) => { sentHalf = r; });
      proxy.setHandler(async (req, res, forward) => {
        const up: IncomingMessage = await forward();
        if (!req.url!.endsWith(`/blobs/${big}`)) { relay(up, res); return; }
        const parts: Buffer[] = [];
        for await (const c of up) parts.push(c as Buffer);
        res.writeHead(200, { ...up.headers });
        res.write(Buffer.concat(parts).subarray(0, 2 << 20), () => setTimeout(sentHalf, 500)); // then it stalls
      });
      const child = spawn(process.execPath, [bin, '--root', root, 'pull', '--insecure', `${proxy.host}/kill/app:1`], { env, stdio: 'ignore' });
      await half;
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      const downloads = join(root, 'image', 'overlay2', 'downloads');
      const partial = join(downloads, `${big.slice(7)}.partial`);
      const have = (await stat(partial)).size;
      expect(have).toBeGreaterThan(0);

      proxy.setHandler(null);
      proxy.log.length = 0;
      const driver = await openDriver({ root, driver: 'overlay2' });
      try {
        const store = await LayerStore.open(driver); // sweeps what the killed pull left
        expect(store.layers()).toEqual([]);
        expect((await readdir(driver.home)).filter((n) => /^[0-9a-f]{64}$/.test(n))).toEqual([]);
        const img = await store.pull(`${proxy.host}/kill/app:1`, { insecure: true });
        expect(img.id).toBe(killId);
        expect(proxy.log.find((l) => l.path.endsWith(`/blobs/${big}`))).toMatchObject({ range: `bytes=${have}-`, status: 206 });
        expect(await readdir(downloads)).toEqual([]);
      } finally {
        await driver.cleanup();
      }
    } finally {
      await proxy.stop();
      await plain.stop();
    }
  });
});
