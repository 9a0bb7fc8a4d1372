// Where registry credentials come from, in the order the docs promise (docs/images.md):
//   1. the `auth` option;
//   2. docker's config.json (`$DOCKER_CONFIG/config.json`, else ~/.docker/config.json):
//      `credHelpers[registry]`, else `credsStore` (both via `docker-credential-<name>`),
//      else `auths[registry]` (`auth` = base64 user:password, or `identitytoken`);
//   3. containers' auth.json (`$REGISTRY_AUTH_FILE`, else $XDG_RUNTIME_DIR/containers/auth.json,
//      else ~/.config/containers/auth.json), whose keys may name a namespace (`host/org`).
// `cairn login` writes where docker does: the helper docker would use, else `auths`.
import { execFile } from 'node:child_process';
import { mkdir, readFile, realpath } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { CairnError } from '@cairnfs/core';
import { writeFileAtomic } from '../atomic.js';
import { DOCKER_HUB, DOCKER_HUB_AUTH_KEY } from './reference.js';

export interface Credentials {
  username?: string;
  password?: string;
  /** An OAuth2 refresh token (docker's `identitytoken`), exchanged at the token service. */
  identityToken?: string;
  /** A bearer token sent as is (docker's `registrytoken`). */
  registryToken?: string;
}

export interface FoundCredentials {
  credentials: Credentials;
  /** Where they came from, for messages ("docker-credential-pass", "/root/.docker/config.json"). */
  from: string;
}

/** Environment variables the credential lookup reads (process.env by default). */
export type Env = Record<string, string | undefined>;

interface AuthEntry { auth?: string; username?: string; password?: string; identitytoken?: string; registrytoken?: string }
interface AuthFile { auths?: Record<string, AuthEntry>; credsStore?: string; credHelpers?: Record<string, string> }

const HUB_ALIASES = [DOCKER_HUB, 'index.docker.io', 'registry-1.docker.io', DOCKER_HUB_AUTH_KEY];

export function dockerConfigPath(env: Env = process.env): string {
  return join(env.DOCKER_CONFIG || join(env.HOME || homedir(), '.docker'), 'config.json');
}

export function containersAuthPaths(env: Env = process.env): string[] {
  if (env.REGISTRY_AUTH_FILE) return [env.REGISTRY_AUTH_FILE];
  return [
    ...(env.XDG_RUNTIME_DIR ? [join(env.XDG_RUNTIME_DIR, 'containers', 'auth.json')] : []),
    join(env.HOME || homedir(), '.config', 'containers', 'auth.json'),
  ];
}

/** The key docker's config uses for a registry: Docker Hub's legacy URL, else the host[:port]. */
export function authKey(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_AUTH_KEY : registry;
}

/** `https://host:5000/v1/` → `host:5000`, as docker's ConvertToHostname. */
function hostOf(key: string): string {
  const noScheme = key.replace(/^[a-z]+:\/\//i, '');
  return noScheme.split('/')[0]!;
}

function sameRegistry(key: string, registry: string): boolean {
  const h = hostOf(key);
  return registry === DOCKER_HUB ? HUB_ALIASES.includes(key) || HUB_ALIASES.includes(h) : h === registry;
}

async function readAuthFile(path: string): Promise<AuthFile | null> {
  let text: string;
  try { text = await readFile(path, 'utf8'); } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new CairnError('ERR_AUTH', `cannot read credentials file ${path}: ${(err as Error).message}`, { subject: path, cause: err });
  }
  if (!text.trim()) return {};
  try {
    const doc = JSON.parse(text) as unknown;
    if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new Error('not a JSON object');
    return doc as AuthFile;
  } catch (err) {
    throw new CairnError('ERR_AUTH', `credentials file ${path} is not valid JSON (${(err as Error).message}); fix or remove it`, { subject: path, cause: err });
  }
}

function fromEntry(e: AuthEntry, where: string): Credentials | null {
  const out: Credentials = {};
  if (typeof e.auth === 'string' && e.auth) {
    const plain = Buffer.from(e.auth, 'base64').toString('utf8');
    const colon = plain.indexOf(':');
    if (colon < 0) throw new CairnError('ERR_AUTH', `the "auth" entry in ${where} is not base64 of user:password; run cairn login again`, { subject: where });
    out.username = plain.slice(0, colon);
    out.password = plain.slice(colon + 1);
  } else {
    if (typeof e.username === 'string') out.username = e.username;
    if (typeof e.password === 'string') out.password = e.password;
  }
  if (typeof e.identitytoken === 'string' && e.identitytoken) out.identityToken = e.identitytoken;
  if (typeof e.registrytoken === 'string' && e.registrytoken) out.registryToken = e.registrytoken;
  return Object.keys(out).length ? out : null;
}

/** Runs `docker-credential-<helper> <verb>` with `input` on stdin; stdout, or null for "not found". */
async function runHelper(helper: string, verb: 'get' | 'store' | 'erase', input: string, env: Env): Promise<string | null> {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(helper)) {
    throw new CairnError('ERR_AUTH', `credential helper name ${JSON.stringify(helper)} is not valid`, { subject: helper });
  }
  const bin = `docker-credential-${helper}`;
  return new Promise((resolve, reject) => {
    const child = execFile(bin, [verb], { env: env as NodeJS.ProcessEnv, timeout: 30_000, maxBuffer: 1 << 20, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (!err) { resolve(stdout); return; }
      const said = `${stdout}${stderr}`.trim();
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        reject(new CairnError('ERR_PREREQUISITES', `credential helper ${bin} is configured in docker's config.json but not installed (not on PATH)`, { subject: bin, cause: err }));
      } else if (verb !== 'store' && /credentials not found/i.test(said)) {
        resolve(null);
      } else {
        reject(new CairnError('ERR_AUTH', `credential helper ${bin} ${verb} failed: ${said || err.message}`, { subject: bin, cause: err }));
      }
    });
    child.stdin?.on('error', () => undefined); // a helper that exits without reading stdin
    child.stdin?.end(input);
  });
}

async function helperGet(helper: string, server: string, env: Env): Promise<Credentials | null> {
  const out = await runHelper(helper, 'get', server, env);
  if (out === null) return null;
  let doc: { Username?: unknown; Secret?: unknown };
  try { doc = JSON.parse(out) as typeof doc; } catch {
    throw new CairnError('ERR_AUTH', `credential helper docker-credential-${helper} printed something that is not JSON`, { subject: helper });
  }
  const user = typeof doc.Username === 'string' ? doc.Username : '';
  const secret = typeof doc.Secret === 'string' ? doc.Secret : '';
  if (!user && !secret) return null;
  // Docker's convention: a user named <token> means the secret is an identity (refresh) token.
  return user === '<token>' ? { identityToken: secret } : { username: user, password: secret };
}

function helperFor(file: AuthFile, registry: string): string | undefined {
  for (const [k, v] of Object.entries(file.credHelpers ?? {})) if (typeof v === 'string' && v && sameRegistry(k, registry)) return v;
  return typeof file.credsStore === 'string' && file.credsStore ? file.credsStore : undefined;
}

function entryFor(auths: Record<string, AuthEntry>, registry: string, repository: string, namespaces: boolean): [string, AuthEntry] | undefined {
  if (namespaces) {
    // containers' auth.json: the most specific `host/namespace/…` key wins.
    const parts = repository.split('/');
    for (let i = parts.length; i > 0; i--) {
      const key = `${registry}/${parts.slice(0, i).join('/')}`;
      if (auths[key]) return [key, auths[key]!];
    }
  }
  if (auths[authKey(registry)]) return [authKey(registry), auths[authKey(registry)]!];
  for (const [k, v] of Object.entries(auths)) if (sameRegistry(k, registry)) return [k, v];
  return undefined;
}

async function lookIn(path: string, registry: string, repository: string, namespaces: boolean, env: Env): Promise<FoundCredentials | null> {
  const file = await readAuthFile(path);
  if (!file) return null;
  const helper = helperFor(file, registry);
  if (helper) {
    const c = await helperGet(helper, authKey(registry), env);
    return c ? { credentials: c, from: `docker-credential-${helper} (configured in ${path})` } : null;
  }
  const hit = entryFor(file.auths ?? {}, registry, repository, namespaces);
  const c = hit ? fromEntry(hit[1], path) : null;
  return c ? { credentials: c, from: path } : null;
}

/** Credentials for a registry from the files and helpers, or null (then the registry is tried anonymously). */
export async function findCredentials(registry: string, repository: string, env: Env = process.env): Promise<FoundCredentials | null> {
  const docker = await lookIn(dockerConfigPath(env), registry, repository, false, env);
  if (docker) return docker;
  for (const p of containersAuthPaths(env)) {
    const found = await lookIn(p, registry, repository, true, env);
    if (found) return found;
  }
  return null;
}

/**
 * Saves credentials as `docker login` does: through the configured helper when there is
 * one (the file then only lists the registry), else base64 in `auths`. The file is
 * replaced atomically and kept private (0600). Returns where they went.
 */
export async function storeCredentials(registry: string, creds: { username: string; password: string }, env: Env = process.env): Promise<string> {
  const path = await realpath(dockerConfigPath(env)).catch(() => dockerConfigPath(env));
  const file = (await readAuthFile(path)) ?? {};
  const key = authKey(registry);
  const auths = { ...(file.auths ?? {}) };
  for (const k of Object.keys(auths)) if (k !== key && sameRegistry(k, registry)) delete auths[k];
  const helper = helperFor(file, registry);
  let where = path;
  if (helper) {
    await runHelper(helper, 'store', JSON.stringify({ ServerURL: key, Username: creds.username, Secret: creds.password }), env);
    auths[key] = {};
    where = `docker-credential-${helper}`;
  } else {
    auths[key] = { auth: Buffer.from(`${creds.username}:${creds.password}`).toString('base64') };
  }
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  await writeFileAtomic(path, JSON.stringify({ ...file, auths }, null, '\t') + '\n', 0o600);
  return where;
}

/** Forgets a registry's credentials (helper and file). True when there were any. */
export async function eraseCredentials(registry: string, env: Env = process.env): Promise<boolean> {
  const path = await realpath(dockerConfigPath(env)).catch(() => dockerConfigPath(env));
  const file = await readAuthFile(path);
  if (!file) return false;
  const helper = helperFor(file, registry);
  if (helper) await runHelper(helper, 'erase', authKey(registry), env);
  const auths = { ...(file.auths ?? {}) };
  const keys = Object.keys(auths).filter((k) => sameRegistry(k, registry));
  for (const k of keys) delete auths[k];
  if (keys.length) await writeFileAtomic(path, JSON.stringify({ ...file, auths }, null, '\t') + '\n', 0o600);
  return keys.length > 0 || helper !== undefined;
}
