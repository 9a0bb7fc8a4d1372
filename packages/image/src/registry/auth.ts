// Registry authentication as Docker does it: the registry's 401 carries a challenge
// (`WWW-Authenticate: Basic …` or `Bearer realm=…,service=…,scope=…`); for Basic the
// credentials go with every request, for Bearer a token is fetched from the realm for the
// scopes a request needs (`repository:library/busybox:pull`), cached per scope set until it
// expires, and fetched again when the registry answers 401 to it.
import { CairnError } from '@cairnfs/core';
import { parseChallenges, type Challenge } from './challenge.js';
import type { Credentials, FoundCredentials } from './credentials.js';
import { registryError } from './errors.js';
import { header, networkError, type HttpResponse, type Transport } from './http.js';

/** Token answers larger than this are refused (a token is a few KB). */
const MAX_TOKEN_RESPONSE = 1 << 20;
/** A token is renewed this long before it expires, so it does not expire in flight. */
const EXPIRY_MARGIN_MS = 10_000;
/** What the token spec says to assume when the answer has no expires_in. */
const DEFAULT_TOKEN_SECONDS = 60;

interface CachedToken { token: string; expiresAt: number }

export class Authenticator {
  /** The last challenge seen per origin (scheme://host:port). */
  private readonly challenges = new Map<string, Challenge>();
  private readonly tokens = new Map<string, CachedToken>();
  private found: Promise<FoundCredentials | null> | null = null;

  /**
   * `lookup` is asked for credentials only when a registry demands them (anonymous pulls
   * never run a credential helper), at most once.
   */
  constructor(private readonly transport: Transport, readonly registry: string,
    private readonly lookup: () => Promise<FoundCredentials | null>) {}

  credentials(): Promise<FoundCredentials | null> {
    this.found ??= this.lookup();
    return this.found;
  }

  /** Whether any credentials are known (after a lookup). */
  async hasCredentials(): Promise<boolean> {
    return (await this.credentials()) !== null;
  }

  /** The Authorization value for a request to `origin` needing `scopes`, if the registry asked for auth before. */
  async authorization(origin: string, scopes: string[], signal?: AbortSignal): Promise<string | undefined> {
    const ch = this.challenges.get(origin);
    if (!ch) return undefined;
    if (ch.scheme === 'basic') {
      const c = (await this.credentials())?.credentials;
      if (!c?.username || c.password === undefined) return undefined;
      return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
    }
    const c = (await this.credentials())?.credentials;
    if (c?.registryToken) return `Bearer ${c.registryToken}`;
    // The request's own scopes, not the challenge's: that names only the request that got the 401.
    const all = [...new Set(scopes)].sort();
    const key = `${ch.params.realm}\n${ch.params.service ?? ''}\n${all.join(' ')}`;
    const cached = this.tokens.get(key);
    if (cached && cached.expiresAt > Date.now()) return `Bearer ${cached.token}`;
    const t = await this.fetchToken(ch, all, c ?? null, signal);
    this.tokens.set(key, t);
    return `Bearer ${t.token}`;
  }

  /**
   * Learns from a 401: records the challenge and forgets tokens it may have refused.
   * True when a retry with (new) credentials can succeed; false when it cannot (no
   * supported challenge, or Basic asked and no credentials).
   */
  async unauthorized(origin: string, wwwAuthenticate: string | string[] | undefined, sent: string | undefined): Promise<boolean> {
    const chs = parseChallenges(wwwAuthenticate);
    const ch = chs.find((c) => c.scheme === 'bearer' && c.params.realm) ?? chs.find((c) => c.scheme === 'basic');
    if (!ch) return false;
    this.challenges.set(origin, ch);
    if (ch.scheme === 'bearer') {
      // The token this request carried was refused (expired, revoked): forget it, not others'.
      if (sent) for (const [k, t] of [...this.tokens]) if (`Bearer ${t.token}` === sent) this.tokens.delete(k);
      return true;
    }
    // Basic: a retry helps only when this request went without the credentials we have.
    // (Decided per request: concurrent first requests all meet the same challenge.)
    return !sent?.startsWith('Basic ') && (await this.hasCredentials());
  }

  /** Whether requests to `origin` are sent with authentication now. */
  knows(origin: string): boolean {
    return this.challenges.has(origin);
  }

  private async fetchToken(ch: Challenge, scopes: string[], creds: Credentials | null, signal?: AbortSignal): Promise<CachedToken> {
    const realm = ch.params.realm!;
    let url: URL;
    try { url = new URL(realm); } catch {
      throw registryError('ERR_REGISTRY', `the registry ${this.registry} named a token service that is not a URL (${JSON.stringify(realm)})`, 401);
    }
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && this.transport.insecure)) {
      throw registryError('ERR_REGISTRY', `the registry ${this.registry} sends clients to a token service over ${url.protocol} (${realm}); refused without insecure: true`, 401);
    }
    const started = Date.now();
    let res: HttpResponse;
    try {
      res = await this.requestToken(url, scopes, ch, creds, signal);
    } catch (err) {
      if (err instanceof CairnError || (signal?.aborted ?? false)) throw err;
      throw networkError(`asking the token service ${url.origin} for access to ${this.registry}`, err, 1);
    }
    const text = await readLimited(res.body, MAX_TOKEN_RESPONSE, `the token service ${url.origin}`);
    if (res.status === 401 || res.status === 403) {
      throw registryError('ERR_AUTH', creds
        ? `the token service of ${this.registry} refused the credentials${creds.username ? ` of user ${creds.username}` : ''}; check them or run \`cairn login ${this.registry}\` again`
        : `the token service of ${this.registry} requires credentials; run \`cairn login ${this.registry}\` or pass auth`, res.status, text);
    }
    if (res.status !== 200) throw registryError('ERR_REGISTRY', `the token service of ${this.registry} (${url.origin}) failed`, res.status, text);
    let doc: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try { doc = JSON.parse(text) as typeof doc; } catch {
      throw registryError('ERR_REGISTRY', `the token service of ${this.registry} answered something that is not JSON`, res.status);
    }
    const token = typeof doc.token === 'string' && doc.token ? doc.token : typeof doc.access_token === 'string' ? doc.access_token : '';
    if (!token) throw registryError('ERR_REGISTRY', `the token service of ${this.registry} answered without a token`, res.status);
    const seconds = typeof doc.expires_in === 'number' && doc.expires_in > 0 ? doc.expires_in : DEFAULT_TOKEN_SECONDS;
    return { token, expiresAt: started + seconds * 1000 - EXPIRY_MARGIN_MS };
  }

  /** GET with Basic credentials (or none), or the OAuth2 POST when there is an identity token. */
  private async requestToken(url: URL, scopes: string[], ch: Challenge, creds: Credentials | null, signal?: AbortSignal): Promise<HttpResponse> {
    let res: HttpResponse;
    if (creds?.identityToken) {
      // OAuth2 refresh-token grant, as docker does with an identity token.
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: creds.identityToken, client_id: 'cairn', ...(ch.params.service ? { service: ch.params.service } : {}) });
      if (scopes.length) form.set('scope', scopes.join(' '));
      res = await this.transport.send({ method: 'POST', url: url.href, headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form.toString(), ...(signal ? { signal } : {}) });
    } else {
      if (ch.params.service) url.searchParams.set('service', ch.params.service);
      for (const s of scopes) url.searchParams.append('scope', s);
      if (creds?.username) url.searchParams.set('account', creds.username);
      const authorization = creds?.username && creds.password !== undefined ? `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}` : undefined;
      res = await this.transport.send({ method: 'GET', url: url.href, ...(authorization ? { authorization } : {}), ...(signal ? { signal } : {}) });
    }
    return res;
  }
}

/** Reads a whole (small) body, refusing one longer than `limit` bytes. */
export async function readLimited(body: AsyncIterable<Uint8Array>, limit: number, what: string): Promise<string> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of body) {
    n += c.length;
    if (n > limit) {
      (body as { destroy?: () => void }).destroy?.();
      throw new CairnError('ERR_REGISTRY', `${what} sent more than ${limit} bytes where a small JSON answer was expected; refused`);
    }
    parts.push(Buffer.from(c));
  }
  return Buffer.concat(parts).toString('utf8');
}

export { header };
