// `cairn login`: check credentials against the registry (GET /v2/ through the same
// Basic/Bearer flow a pull uses), then store them where docker does (credentials.ts).
import { CairnError } from '@cairnfs/core';
import { RegistryClient, type ClientOptions } from './client.js';
import { eraseCredentials, storeCredentials } from './credentials.js';
import { DOCKER_HUB, parseReference } from './reference.js';

/** `https://host:5000/`, `host:5000`, `docker.io` → the registry name references use. */
export function normalizeRegistry(input: string): string {
  const host = input.trim().replace(/^[a-z]+:\/\//i, '').split('/')[0] ?? '';
  if (['docker.io', 'index.docker.io', 'registry-1.docker.io'].includes(host)) return DOCKER_HUB;
  try {
    const r = parseReference(`${host}/x`);
    if (r.registry === host) return host;
  } catch { /* falls through */ }
  throw new CairnError('ERR_INVALID_OPTION', `${JSON.stringify(input)} is not a registry host[:port] (e.g. localhost:5000, ghcr.io)`, { subject: input });
}

export interface LoginOptions extends Omit<ClientOptions, 'auth'> {
  username: string;
  password: string;
}

/** Verifies the credentials with the registry and saves them; returns where they went. */
export async function login(registryInput: string, opts: LoginOptions): Promise<{ registry: string; storedIn: string }> {
  const registry = normalizeRegistry(registryInput);
  if (!opts.username || opts.password === undefined || opts.password === '') {
    throw new CairnError('ERR_INVALID_OPTION', 'login needs a username and a password', { subject: registry });
  }
  const client = new RegistryClient(registry, { ...opts, auth: { username: opts.username, password: opts.password } });
  try {
    const res = await client.request('GET', 'v2/', { scopes: [] });
    if (res.status !== 200) await client.fail(res, `login to ${registry} as ${opts.username}`);
    await res.body.dump().catch(() => undefined);
  } finally {
    await client.close();
  }
  const storedIn = await storeCredentials(registry, { username: opts.username, password: opts.password }, opts.env ?? process.env);
  return { registry, storedIn };
}

/** Forgets the stored credentials of a registry. */
export async function logout(registryInput: string, opts: { env?: Record<string, string | undefined> } = {}): Promise<boolean> {
  return eraseCredentials(normalizeRegistry(registryInput), opts.env ?? process.env);
}
