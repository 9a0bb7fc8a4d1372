// TLS and authentication against real registries: a test CA (openssl), htpasswd basic
// auth (bcrypt), and distribution's token auth with the token service in this process;
// credentials from the options, docker's config.json (auths, credHelpers, credsStore via
// real docker-credential-* executables) and containers' auth.json; `login`.
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isCairnError } from '@cairnfs/core';
import { login } from '@cairnfs/image';
import {
  describeBackend, makeTestCa, registryMissing, relay, startFaultProxy, startRegistry, startTokenService,
  type RegistryFixture, type TestCa, type TokenService,
} from '@cairnfs/testkit';
import { freshStore, layersFor, seedDockerArchive } from './registry-fixture.js';

const RETRY = { retry: { attempts: 2, baseDelayMs: 10, maxDelayMs: 50 } };
const ALICE = { username: 'alice', password: 's3cret pass:word' };
const BOB = { username: 'bob', password: 'hunter2' };

async function failure(p: Promise<unknown>): Promise<{ code: string; message: string; status?: number }> {
  try { await p; } catch (err) {
    return { code: isCairnError(err) ? err.code : `not a CairnError: ${(err as Error).message}`, message: (err as Error).message, ...(isCairnError(err) && err.status !== undefined ? { status: err.status } : {}) };
  }
  return { code: 'resolved', message: '' };
}

describeBackend('registry', registryMissing(), () => {
  let work: string;
  let ca: TestCa;
  let basic: RegistryFixture;
  let tokens: TokenService;
  let tokenReg: RegistryFixture;
  let id: string;
  let tls: { ca: string };
  /** An environment with no credentials anywhere (HOME and XDG dirs empty). */
  let bare: Record<string, string | undefined>;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'cairn-auth-'));
    ca = await makeTestCa(join(work, 'ca'));
    tls = { ca: ca.caPem };
    basic = await startRegistry({ tls: ca, htpasswd: { [ALICE.username]: ALICE.password } });
    tokens = await startTokenService(ca, { tls: true, users: { [BOB.username]: BOB.password }, refreshTokens: { 'refresh-token-1': BOB.username } });
    tokenReg = await startRegistry({ tls: ca, token: { service: tokens, ca } });
    const layers = await layersFor('auth');
    ({ id } = await seedDockerArchive(basic, work, 'auth/app:1', layers, ALICE));
    await seedDockerArchive(tokenReg, work, 'token/app:1', layers, BOB);
    await mkdir(join(work, 'home'));
    bare = { HOME: join(work, 'home'), PATH: process.env.PATH };
  }, 90_000);
  afterAll(async () => {
    await basic?.stop();
    await tokenReg?.stop();
    await tokens?.stop();
    await rm(work, { recursive: true, force: true });
  });

  test('certs.d: a CA in <root>/<host:port>/ca.crt is trusted without tls.ca; a .cert without its .key is ERR_INVALID_OPTION naming it', async () => {
    const certs = join(work, 'certs.d');
    await mkdir(join(certs, basic.host), { recursive: true });
    await writeFile(join(certs, basic.host, 'ca.crt'), ca.caPem);
    const s = await freshStore();
    try {
      // Without the directory (only an unrelated root) the same pull is untrusted.
      const untrusted = await failure(s.store.pull(`${basic.host}/auth/app:1`, { ...RETRY, certsDirs: [join(work, 'home')], auth: ALICE, env: bare }));
      expect(untrusted.code).toBe('ERR_NETWORK');
      expect(untrusted.message).toMatch(/certs\.d/);
      expect((await s.store.pull(`${basic.host}/auth/app:1`, { ...RETRY, certsDirs: [join(work, 'home'), certs], auth: ALICE, env: bare })).id).toBe(id);
      await writeFile(join(certs, basic.host, 'client.cert'), 'not used');
      const half = await failure(s.store.pull(`${basic.host}/auth/app:1`, { ...RETRY, certsDirs: [certs], auth: ALICE, env: bare }));
      expect(half.code).toBe('ERR_INVALID_OPTION');
      expect(half.message).toContain(join(certs, basic.host, 'client.cert'));
      expect(half.message).toContain('client.key');
    } finally {
      await s.close();
      await rm(certs, { recursive: true, force: true });
    }
  });

  test('mutual TLS: a registry that requires a client certificate refuses a client without one; the pair from certs.d (x.cert + x.key) gets through', async () => {
    const mtls = await startRegistry({ tls: ca, clientCerts: true });
    const certs = join(work, 'certs-mtls.d');
    try {
      const seeded = await seedDockerArchive(mtls, work, 'mtls/app:1', await layersFor('mtls'));
      await mkdir(join(certs, mtls.host), { recursive: true });
      await writeFile(join(certs, mtls.host, 'ca.crt'), ca.caPem);
      const s = await freshStore();
      try {
        const refused = await failure(s.store.pull(`${mtls.host}/mtls/app:1`, { ...RETRY, certsDirs: [certs], env: bare }));
        expect(refused.code).toBe('ERR_NETWORK');
        await writeFile(join(certs, mtls.host, 'me.cert'), await readFile(ca.clientCert));
        await writeFile(join(certs, mtls.host, 'me.key'), await readFile(ca.clientKey));
        expect((await s.store.pull(`${mtls.host}/mtls/app:1`, { ...RETRY, certsDirs: [certs], env: bare })).id).toBe(seeded.id);
      } finally {
        await s.close();
      }
    } finally {
      await mtls.stop();
      await rm(certs, { recursive: true, force: true });
    }
  }, 60_000);

  test('TLS: verified with the test CA; without it ERR_NETWORK naming the certificate problem; insecure skips verification', async () => {
    const s = await freshStore();
    try {
      expect((await s.store.pull(`${basic.host}/auth/app:1`, { ...RETRY, tls, auth: ALICE, env: bare })).id).toBe(id);
      const untrusted = await failure(s.store.pull(`${basic.host}/auth/app:1`, { ...RETRY, auth: ALICE, env: bare }));
      expect(untrusted.code).toBe('ERR_NETWORK');
      expect(untrusted.message).toMatch(/certificate.*tls\.ca/s);
      await s.store.removeImage(id);
      expect((await s.store.pull(`${basic.host}/auth/app:1`, { ...RETRY, insecure: true, auth: ALICE, env: bare })).id).toBe(id);
    } finally {
      await s.close();
    }
  });

  test('basic auth: none found is ERR_AUTH saying to log in; a wrong password is ERR_AUTH naming where it came from', async () => {
    const s = await freshStore();
    try {
      const none = await failure(s.store.pull(`${basic.host}/auth/app:1`, { ...RETRY, tls, env: bare }));
      expect(none).toMatchObject({ code: 'ERR_AUTH', status: 401 });
      expect(none.message).toMatch(/cairn login/);
      const wrong = await failure(s.store.pull(`${basic.host}/auth/app:1`, { ...RETRY, tls, env: bare, auth: { ...ALICE, password: 'nope' } }));
      expect(wrong).toMatchObject({ code: 'ERR_AUTH', status: 401 });
      expect(wrong.message).toMatch(/the auth option/);
      expect(s.store.layers()).toEqual([]);
    } finally {
      await s.close();
    }
  });

  test('credentials from docker config.json (DOCKER_CONFIG) before containers auth.json (REGISTRY_AUTH_FILE); auth.json when docker has none', async () => {
    const dir = await mkdtemp(join(work, 'cfg-'));
    const b64 = (u: string, p: string) => Buffer.from(`${u}:${p}`).toString('base64');
    await writeFile(join(dir, 'config.json'), JSON.stringify({ auths: { [`https://${basic.host}/v2/`]: { auth: b64(ALICE.username, ALICE.password) } } }));
    await writeFile(join(dir, 'auth.json'), JSON.stringify({ auths: { [`${basic.host}/auth`]: { auth: b64(ALICE.username, 'wrong') } } }));
    const s = await freshStore();
    try {
      const env = { ...bare, DOCKER_CONFIG: dir, REGISTRY_AUTH_FILE: join(dir, 'auth.json') };
      expect((await s.store.pull(`${basic.host}/auth/app:1`, { ...RETRY, tls, env })).id).toBe(id);
      await s.store.removeImage(id);
      // docker's file has nothing for this registry: auth.json's namespace entry is used (and is wrong)
      await writeFile(join(dir, 'config.json'), JSON.stringify({ auths: { 'other.example:5000': { auth: b64('x', 'y') } } }));
      const wrong = await failure(s.store.pull(`${basic.host}/auth/app:1`, { ...RETRY, tls, env }));
      expect(wrong.code).toBe('ERR_AUTH');
      expect(wrong.message).toContain(join(dir, 'auth.json'));
      await writeFile(join(dir, 'auth.json'), JSON.stringify({ auths: { [`${basic.host}/auth`]: { auth: b64(ALICE.username, ALICE.password) } } }));
      expect((await s.store.pull(`${basic.host}/auth/app:1`, { ...RETRY, tls, env })).id).toBe(id);
    } finally {
      await s.close();
    }
  });

  /** A docker-credential-<name> executable that answers for one server and logs what it was asked. */
  async function helper(name: string, secrets: Record<string, { Username: string; Secret: string }>): Promise<{ bin: string; log: string; store: string }> {
    const bin = await mkdtemp(join(work, 'bin-'));
    const log = join(bin, 'calls.log');
    const store = join(bin, 'store.json');
    await writeFile(store, JSON.stringify(secrets));
    const script = `#!/usr/bin/env node
const fs = require('fs');
const verb = process.argv[2];
const input = fs.readFileSync(0, 'utf8');
fs.appendFileSync(${JSON.stringify(log)}, verb + ' ' + input.trim() + '\\n');
const db = JSON.parse(fs.readFileSync(${JSON.stringify(store)}, 'utf8'));
if (verb === 'get') {
  const e = db[input.trim()];
  if (!e) { process.stdout.write('credentials not found in native keychain'); process.exit(1); }
  process.stdout.write(JSON.stringify({ ServerURL: input.trim(), ...e }));
} else if (verb === 'store') {
  const c = JSON.parse(input); db[c.ServerURL] = { Username: c.Username, Secret: c.Secret };
  fs.writeFileSync(${JSON.stringify(store)}, JSON.stringify(db));
} else if (verb === 'erase') { delete db[input.trim()]; fs.writeFileSync(${JSON.stringify(store)}, JSON.stringify(db)); }
`;
    await writeFile(join(bin, `docker-credential-${name}`), script);
    await chmod(join(bin, `docker-credential-${name}`), 0o755);
    return { bin, log, store };
  }

  test('credential helpers: credHelpers[registry] wins over credsStore; a helper without an entry means anonymous', async () => {
    const good = await helper('cairngood', { [basic.host]: { Username: ALICE.username, Secret: ALICE.password } });
    const empty = await helper('cairnempty', {});
    const dir = await mkdtemp(join(work, 'cfg-'));
    await writeFile(join(dir, 'config.json'), JSON.stringify({ credsStore: 'cairnempty', credHelpers: { [basic.host]: 'cairngood' } }));
    const env = { ...bare, DOCKER_CONFIG: dir, PATH: `${good.bin}:${empty.bin}:${process.env.PATH}` };
    const s = await freshStore();
    try {
      expect((await s.store.pull(`${basic.host}/auth/app:1`, { ...RETRY, tls, env })).id).toBe(id);
      expect(await readFile(good.log, 'utf8')).toBe(`get ${basic.host}\n`);
      await s.store.removeImage(id);
      await writeFile(join(dir, 'config.json'), JSON.stringify({ credsStore: 'cairnempty' }));
      const anon = await failure(s.store.pull(`${basic.host}/auth/app:1`, { ...RETRY, tls, env }));
      expect(anon.code).toBe('ERR_AUTH');
      expect(await readFile(empty.log, 'utf8')).toBe(`get ${basic.host}\n`);
      // a configured helper that is not installed is named
      await writeFile(join(dir, 'config.json'), JSON.stringify({ credsStore: 'cairnmissing' }));
      const missing = await failure(s.store.pull(`${basic.host}/auth/app:1`, { ...RETRY, tls, env }));
      expect(missing.code).toBe('ERR_PREREQUISITES');
      expect(missing.message).toMatch(/docker-credential-cairnmissing/);
    } finally {
      await s.close();
    }
  });

  test('login checks the credentials and writes config.json as docker does (0600, base64 auths); a refused login writes nothing', async () => {
    const dir = join(await mkdtemp(join(work, 'login-')), 'docker');
    const env = { ...bare, DOCKER_CONFIG: dir };
    const refused = await failure(login(basic.host, { ...ALICE, password: 'bad', tls, env }));
    expect(refused.code).toBe('ERR_AUTH');
    expect(await stat(join(dir, 'config.json')).catch(() => null)).toBeNull();
    const r = await login(`https://${basic.host}/`, { ...ALICE, tls, env });
    expect(r).toEqual({ registry: basic.host, storedIn: join(dir, 'config.json') });
    const cfg = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as { auths: Record<string, { auth: string }> };
    expect(Buffer.from(cfg.auths[basic.host]!.auth, 'base64').toString()).toBe(`${ALICE.username}:${ALICE.password}`);
    expect((await stat(join(dir, 'config.json'))).mode & 0o777).toBe(0o600);
    const s = await freshStore();
    try {
      expect((await s.store.pull(`${basic.host}/auth/app:1`, { ...RETRY, tls, env })).id).toBe(id);
    } finally {
      await s.close();
    }
  });

  test('login with a credsStore stores through the helper; the file only lists the registry', async () => {
    const h = await helper('cairnstore', {});
    const dir = await mkdtemp(join(work, 'cfg-'));
    await writeFile(join(dir, 'config.json'), JSON.stringify({ credsStore: 'cairnstore', experimental: 'kept' }));
    const env = { ...bare, DOCKER_CONFIG: dir, PATH: `${h.bin}:${process.env.PATH}` };
    const r = await login(basic.host, { ...ALICE, tls, env });
    expect(r.storedIn).toBe('docker-credential-cairnstore');
    expect(JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'))).toEqual({ credsStore: 'cairnstore', experimental: 'kept', auths: { [basic.host]: {} } });
    expect(JSON.parse(await readFile(h.store, 'utf8'))).toEqual({ [basic.host]: { Username: ALICE.username, Secret: ALICE.password } });
  });

  test('token auth: anonymous is refused; with credentials one token serves the whole pull (cached per scope)', async () => {
    const s = await freshStore();
    try {
      const anon = await failure(s.store.pull(`${tokenReg.host}/token/app:1`, { ...RETRY, tls, env: bare }));
      expect(anon.code).toBe('ERR_AUTH');
      tokens.requests.length = 0;
      expect((await s.store.pull(`${tokenReg.host}/token/app:1`, { ...RETRY, tls, auth: BOB, env: bare })).id).toBe(id);
      expect(tokens.requests).toEqual([{ method: 'GET', user: 'bob', scopes: ['repository:token/app:pull'], status: 200 }]);
      const wrong = await failure(s.store.pull(`${tokenReg.host}/token/app:1`, { ...RETRY, tls, auth: { ...BOB, password: 'x' }, env: bare }));
      expect(wrong.code).toBe('ERR_AUTH');
      expect(wrong.message).toMatch(/refused the credentials of user bob/);
    } finally {
      await s.close();
    }
  });

  test('token auth with an identity (refresh) token: the OAuth2 POST grant', async () => {
    const s = await freshStore();
    try {
      tokens.requests.length = 0;
      expect((await s.store.pull(`${tokenReg.host}/token/app:1`, { ...RETRY, tls, auth: { identityToken: 'refresh-token-1' }, env: bare })).id).toBe(id);
      expect(tokens.requests.map((r) => [r.method, r.user, r.status])).toEqual([['POST', 'bob', 200]]);
    } finally {
      await s.close();
    }
  });

  test('a token the registry stops accepting (401 mid-pull) is fetched anew and the request retried', async () => {
    const plainTokens = await startTokenService(ca, { users: { [BOB.username]: BOB.password } });
    const reg = await startRegistry({ token: { service: plainTokens, ca } });
    const proxy = await startFaultProxy(reg.url);
    const s = await freshStore();
    try {
      await seedDockerArchive(reg, work, 'token/app:1', await layersFor('auth'), BOB);
      let challenge = '';
      let refused = 0;
      proxy.setHandler(async (req, res, forward) => {
        const up = await forward();
        if (up.statusCode === 401) challenge = String(up.headers['www-authenticate']);
        if (req.url!.includes('/blobs/') && refused === 0 && challenge) {
          refused++;
          up.resume();
          res.writeHead(401, { 'www-authenticate': challenge, 'content-type': 'application/json' });
          res.end('{"errors":[{"code":"UNAUTHORIZED","message":"token expired"}]}');
          return;
        }
        relay(up, res);
      });
      plainTokens.requests.length = 0;
      const img = await s.store.pull(`${proxy.host}/token/app:1`, { ...RETRY, insecure: true, auth: BOB, env: bare });
      expect(img.id).toBe(id);
      expect(refused).toBe(1);
      expect(plainTokens.requests.filter((r) => r.status === 200)).toHaveLength(2);
    } finally {
      await s.close();
      await proxy.stop();
      await reg.stop();
      await plainTokens.stop();
    }
  });

  test('push with basic auth (concurrent first requests all meet the challenge) and with a token; anonymous push is ERR_AUTH', async () => {
    const s = await freshStore();
    try {
      await s.store.pull(`${basic.host}/auth/app:1`, { ...RETRY, tls, auth: ALICE, env: bare });
      const r = await s.store.push(id, `${basic.host}/auth/copy:1`, { ...RETRY, tls, auth: ALICE, env: bare });
      expect(r.mounted + r.uploaded + r.existing).toBe(3);
      const anon = await failure(s.store.push(id, `${tokenReg.host}/token/pushed:1`, { ...RETRY, tls, env: bare }));
      expect(anon.code).toBe('ERR_AUTH');
      tokens.requests.length = 0;
      const t = await s.store.push(id, `${tokenReg.host}/token/pushed:1`, { ...RETRY, tls, auth: BOB, env: bare });
      expect(t.uploaded).toBe(3);
      expect(tokens.requests.every((q) => q.user === 'bob' && q.scopes.includes('repository:token/pushed:pull,push'))).toBe(true);
    } finally {
      await s.close();
    }
  });
});
