import { execFile, spawn } from 'node:child_process';
import { X509Certificate, createHash, randomBytes, sign } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, request as httpsRequest } from 'node:https';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Private CNCF distribution registries for tests (Debian's `docker-registry`, 2.8), as the
 * shared backend notes describe: each instance is `docker-registry serve CONFIG.yml` with
 * its own storage, config and log under one temp dir, listening on 127.0.0.1 only, on a
 * free port. Plain HTTP, TLS with a test CA (openssl), htpasswd basic auth (bcrypt,
 * `htpasswd -B`), or token auth against a token service run here in the test process
 * (distribution's `auth.token`: realm, service, issuer, rootcertbundle; JWTs signed RS256
 * with node:crypto and a certificate made for it).
 */
export const REGISTRY_BIN = '/usr/bin/docker-registry';
export const SKOPEO_BIN = '/usr/bin/skopeo';

/** Null when registries can run here, else what to install (for describeBackend). */
export function registryMissing(): string | null {
  for (const [bin, pkg] of [[REGISTRY_BIN, 'docker-registry'], [SKOPEO_BIN, 'skopeo'], ['/usr/bin/htpasswd', 'apache2-utils'], ['/usr/bin/openssl', 'openssl']] as const) {
    if (!existsSync(bin)) return `${bin} is missing: install ${pkg} (scripts/install-deps.sh)`;
  }
  return null;
}

function run(cmd: string, args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = execFile(cmd, args, { maxBuffer: 64 * 1024 * 1024, encoding: 'utf8', ...(opts.env ? { env: opts.env } : {}) }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
    // A command that exits without reading its input (htpasswd) makes the write fail with
    // EPIPE: its exit status, above, is what says how it went.
    p.stdin!.on('error', () => undefined);
    p.stdin!.end(opts.input ?? '');
  });
}

/** A free TCP port on 127.0.0.1 (bound, read, released). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createNetServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

// ---- TLS material -------------------------------------------------------------------

export interface TestCa {
  dir: string;
  caPem: string;
  /** A directory with only ca.crt, for skopeo's --src-cert-dir/--dest-cert-dir. */
  certDir: string;
  /** A server certificate for 127.0.0.1 and localhost, signed by the CA. */
  serverCert: string;
  serverKey: string;
  /** A self-signed certificate and key for signing registry tokens (the registry's rootcertbundle). */
  tokenCert: string;
  tokenKey: string;
  /** A client certificate and key (PEM files) signed by the CA, for registries that require mutual TLS. */
  clientCert: string;
  clientKey: string;
}

/** Makes a CA, a server certificate for loopback and a token-signing certificate, with openssl. */
export async function makeTestCa(dir: string): Promise<TestCa> {
  await mkdir(join(dir, 'certs'), { recursive: true });
  const p = (n: string) => join(dir, n);
  await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', p('ca.key'), '-out', p('ca.crt'), '-days', '3', '-subj', '/CN=cairn test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  await run('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', p('server.key'), '-out', p('server.csr'), '-subj', '/CN=127.0.0.1']);
  await writeFile(p('server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  await run('openssl', ['x509', '-req', '-in', p('server.csr'), '-CA', p('ca.crt'), '-CAkey', p('ca.key'), '-CAcreateserial',
    '-out', p('server.crt'), '-days', '3', '-extfile', p('server.ext')]);
  await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', p('token.key'), '-out', p('token.crt'), '-days', '3', '-subj', '/CN=cairn test token signer']);
  await run('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', p('client.key'), '-out', p('client.csr'), '-subj', '/CN=cairn test client']);
  await writeFile(p('client.ext'), 'extendedKeyUsage=clientAuth\n');
  await run('openssl', ['x509', '-req', '-in', p('client.csr'), '-CA', p('ca.crt'), '-CAkey', p('ca.key'), '-CAcreateserial',
    '-out', p('client.crt'), '-days', '3', '-extfile', p('client.ext')]);
  const caPem = await readFile(p('ca.crt'), 'utf8');
  await writeFile(join(dir, 'certs', 'ca.crt'), caPem);
  return { dir, caPem, certDir: join(dir, 'certs'), serverCert: p('server.crt'), serverKey: p('server.key'), tokenCert: p('token.crt'), tokenKey: p('token.key'),
    clientCert: p('client.crt'), clientKey: p('client.key') };
}

// ---- the token service ----------------------------------------------------------------

export interface TokenServiceOptions {
  /** user → password; these users get every action they ask for. */
  users?: Record<string, string>;
  /** Refresh (identity) tokens → user, for the OAuth2 POST grant. */
  refreshTokens?: Record<string, string>;
  /** Whether anonymous clients get `pull` (default false: anonymous gets no access). */
  anonymousPull?: boolean;
  /** Token lifetime in seconds (default 300). */
  expiresIn?: number;
}

export interface TokenRequestLog { method: string; user: string | null; scopes: string[]; status: number }

export interface TokenService {
  readonly realm: string;
  readonly service: string;
  readonly issuer: string;
  /** Every token request, in order. */
  readonly requests: TokenRequestLog[];
  stop(): Promise<void>;
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

/** Starts a token service on 127.0.0.1 (https when `ca` is given), signing with the CA's token certificate. */
export async function startTokenService(ca: TestCa, opts: TokenServiceOptions & { tls?: boolean } = {}): Promise<TokenService> {
  const service = 'cairn-test-registry';
  const issuer = 'cairn-test-token-issuer';
  const requests: TokenRequestLog[] = [];
  const x5c = new X509Certificate(await readFile(ca.tokenCert)).raw.toString('base64');
  const key = await readFile(ca.tokenKey, 'utf8');

  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://x');
      let user: string | null = null;
      let scopes = url.searchParams.getAll('scope');
      const answer = (status: number, body: unknown) => {
        requests.push({ method: req.method ?? '', user, scopes, status });
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      if (req.method === 'POST') {
        const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
        scopes = (form.get('scope') ?? '').split(' ').filter(Boolean);
        user = opts.refreshTokens?.[form.get('refresh_token') ?? ''] ?? null;
        if (form.get('grant_type') !== 'refresh_token' || !user) { answer(401, { error: 'invalid_grant' }); return; }
      } else {
        const auth = req.headers.authorization;
        if (auth?.startsWith('Basic ')) {
          const plain = Buffer.from(auth.slice(6), 'base64').toString('utf8');
          const [u, ...rest] = plain.split(':');
          if (opts.users?.[u!] === undefined || opts.users[u!] !== rest.join(':')) { user = u!; answer(401, { errors: [{ code: 'UNAUTHORIZED', message: 'bad credentials' }] }); return; }
          user = u!;
        }
      }
      const access = scopes.map((s) => {
        const [type, ...restParts] = s.split(':');
        const actions = restParts.pop()!.split(',');
        const name = restParts.join(':');
        const granted = user ? actions : opts.anonymousPull ? actions.filter((a) => a === 'pull') : [];
        return { type, name, actions: granted };
      }).filter((a) => a.actions.length > 0);
      const now = Math.floor(Date.now() / 1000);
      const expiresIn = opts.expiresIn ?? 300;
      const header = b64url(JSON.stringify({ typ: 'JWT', alg: 'RS256', x5c: [x5c] }));
      const claims = b64url(JSON.stringify({ iss: issuer, sub: user ?? '', aud: service, exp: now + expiresIn, nbf: now - 5, iat: now, jti: randomBytes(8).toString('hex'), access }));
      const sig = b64url(sign('sha256', Buffer.from(`${header}.${claims}`), key));
      const token = `${header}.${claims}.${sig}`;
      answer(200, { token, access_token: token, expires_in: expiresIn, issued_at: new Date(now * 1000).toISOString() });
    });
  };
  const server: Server = opts.tls
    ? createHttpsServer({ cert: await readFile(ca.serverCert), key: await readFile(ca.serverKey) }, handler)
    : createHttpServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    realm: `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}/token`, service, issuer, requests,
    stop: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}

// ---- the registry --------------------------------------------------------------------

export interface RegistryOptions {
  /** TLS with this CA's server certificate. */
  tls?: TestCa;
  /** htpasswd users (bcrypt entries made with `htpasswd -B`). */
  htpasswd?: Record<string, string>;
  /** Token auth against this service (its realm must be reachable by clients). */
  token?: { service: TokenService; ca: TestCa };
  /** With `tls`: require a client certificate signed by the same CA (mutual TLS). */
  clientCerts?: boolean;
  /** Where the temp dir goes (default: the OS temp dir). */
  baseDir?: string;
}

export interface RegistryFixture {
  readonly dir: string;
  /** `127.0.0.1:PORT`, the registry part of references. */
  readonly host: string;
  /** `http://127.0.0.1:PORT` or `https://…`. */
  readonly url: string;
  readonly pid: number;
  readonly logFile: string;
  /** Where the registry keeps blobs (`docker/registry/v2/…`). */
  readonly storage: string;
  /** skopeo flags for this registry as `copy` source (`src`) or destination (`dest`), or for `inspect`: TLS and credentials. */
  skopeoFlags(side: 'src' | 'dest' | 'inspect', creds?: { username: string; password: string }): string[];
  stop(): Promise<void>;
}

/** GET /v2/ until the registry answers (200 or 401), or throws with its log. */
async function waitReady(url: string, tls: { ca: string; cert?: Buffer; key?: Buffer } | undefined, exited: () => string | null, logFile: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const req = (url.startsWith('https') ? httpsRequest : httpRequest)(`${url}/v2/`, { method: 'GET', ...(tls ?? {}), timeout: 1000 }, (res) => {
        res.resume();
        resolve(res.statusCode === 200 || res.statusCode === 401);
      });
      req.on('error', () => resolve(false));
      req.on('timeout', () => { req.destroy(); resolve(false); });
      req.end();
    });
    if (ok) return;
    const gone = exited();
    if (gone !== null || Date.now() > deadline) {
      const tail = existsSync(logFile) ? readFileSync(logFile, 'utf8').split('\n').slice(-15).join('\n') : '';
      throw new Error(gone !== null ? `docker-registry exited (${gone}) before answering:\n${tail}` : `docker-registry did not answer within 20 s:\n${tail}`);
    }
    await sleep(50);
  }
}

function alive(pid: number): boolean {
  try { process.kill(pid, 0); return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8')); } catch { return false; }
}

/** Starts a private registry on 127.0.0.1 with the given security; stop() kills it (by pid) and removes everything. */
export async function startRegistry(opts: RegistryOptions = {}): Promise<RegistryFixture> {
  const missing = registryMissing();
  if (missing) throw new Error(missing);
  const dir = await mkdtemp(join(opts.baseDir ?? tmpdir(), 'cairn-registry-'));
  const storage = join(dir, 'data');
  await mkdir(storage);
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const scheme = opts.tls ? 'https' : 'http';
  const lines = [
    'version: 0.1',
    'log:', '  level: info', '  accesslog:', '    disabled: true',
    'storage:', `  filesystem:`, `    rootdirectory: ${storage}`, '  delete:', '    enabled: true',
    '  maintenance:', '    uploadpurging:', '      enabled: false',
    'http:', `  addr: ${host}`, `  secret: ${randomBytes(16).toString('hex')}`,
  ];
  if (opts.tls) lines.push('  tls:', `    certificate: ${opts.tls.serverCert}`, `    key: ${opts.tls.serverKey}`);
  if (opts.tls && opts.clientCerts) lines.push('    clientcas:', `      - ${join(opts.tls.dir, 'ca.crt')}`);
  if (opts.htpasswd) {
    const entries: string[] = [];
    for (const [u, p] of Object.entries(opts.htpasswd)) entries.push((await run('htpasswd', ['-Bbn', u, p])).trim());
    await writeFile(join(dir, 'htpasswd'), entries.join('\n') + '\n');
    lines.push('auth:', '  htpasswd:', '    realm: cairn-test', `    path: ${join(dir, 'htpasswd')}`);
  } else if (opts.token) {
    lines.push('auth:', '  token:', `    realm: ${opts.token.service.realm}`, `    service: ${opts.token.service.service}`,
      `    issuer: ${opts.token.service.issuer}`, `    rootcertbundle: ${opts.token.ca.tokenCert}`);
  }
  // skopeo reads a client pair from its cert dir as name.cert + name.key beside the CA.
  let certDir = opts.tls?.certDir;
  if (opts.tls && opts.clientCerts) {
    certDir = join(dir, 'skopeo-certs');
    await mkdir(certDir);
    await writeFile(join(certDir, 'ca.crt'), opts.tls.caPem);
    await writeFile(join(certDir, 'client.cert'), readFileSync(opts.tls.clientCert));
    await writeFile(join(certDir, 'client.key'), readFileSync(opts.tls.clientKey));
  }
  const config = join(dir, 'config.yml');
  await writeFile(config, lines.join('\n') + '\n');
  const logFile = join(dir, 'registry.log');
  const log = openSync(logFile, 'a');
  let child;
  try {
    // OTEL/proxy variables of the caller must not reach it; HOME keeps it from reading ours.
    child = spawn(REGISTRY_BIN, ['serve', config], { stdio: ['ignore', log, log], env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir } });
  } finally {
    closeSync(log);
  }
  const pid = child.pid!;
  let exited: string | null = null;
  child.once('exit', (code, signal) => { exited = signal ?? String(code); });
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (alive(pid)) {
      try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ }
      for (let i = 0; i < 100 && alive(pid); i++) await sleep(50);
      if (alive(pid)) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const probeTls = opts.tls && { ca: opts.tls.caPem,
      ...(opts.clientCerts ? { cert: readFileSync(opts.tls.clientCert), key: readFileSync(opts.tls.clientKey) } : {}) };
    await waitReady(`${scheme}://${host}`, probeTls, () => exited, logFile);
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    dir, host, url: `${scheme}://${host}`, pid, logFile, storage,
    skopeoFlags: (side, creds) => {
      const p = side === 'inspect' ? '--' : `--${side}-`;
      return [
        ...(opts.tls ? [`${p}cert-dir`, certDir!] : [`${p}tls-verify=false`]),
        ...(creds ? [`${p}creds`, `${creds.username}:${creds.password}`] : []),
      ];
    },
    stop,
  };
}

/** Runs skopeo with no user configuration leaking in (its own empty auth file, no registries.conf surprises). */
export async function skopeo(args: string[], opts: { authFile?: string } = {}): Promise<string> {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: tmpdir(), ...(opts.authFile ? { REGISTRY_AUTH_FILE: opts.authFile } : {}) };
  return run(SKOPEO_BIN, ['--insecure-policy', ...args], { env });
}

/** The sha256 of a file as skopeo/registries name blobs. */
export function sha256Hex(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}
