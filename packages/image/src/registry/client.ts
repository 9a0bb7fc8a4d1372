// One registry (or mirror) endpoint: picks the scheme, authenticates (auth.ts), retries
// with bounded back-off on 5xx/429 and broken connections, and maps failures to
// CairnErrors. The protocol steps (manifests, blobs, uploads) are in their own modules.
import type { Readable } from 'node:stream';
import { CairnError, type ErrorCode } from '@cairnfs/core';
import { Authenticator, readLimited } from './auth.js';
import { findCredentials, type Credentials, type FoundCredentials } from './credentials.js';
import { registryError } from './errors.js';
import { Transport, header, isAbort, isRetryableStatus, isTransient, networkError, type HttpResponse, type TransportOptions } from './http.js';
import { endpointHost } from './reference.js';

export interface ClientOptions extends TransportOptions {
  /** Credentials to use instead of looking them up (docs/images.md has the lookup order). */
  auth?: Credentials;
  /** Environment for the credential lookup (DOCKER_CONFIG, REGISTRY_AUTH_FILE, HOME); default process.env. */
  env?: Record<string, string | undefined>;
  signal?: AbortSignal;
}

export interface RequestOptions {
  /** Token scopes the request needs, e.g. `repository:library/busybox:pull`. */
  scopes: string[];
  headers?: Record<string, string>;
  /** A body, or a function making it anew for each try (needed to retry a streamed body). */
  body?: Buffer | string | (() => Buffer | string | Readable);
  /** Retry on 5xx and broken connections (default: for GET and HEAD, and for bodies given as a function). */
  retry?: boolean;
}

type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** insecure registries: host → the scheme it answered on (bounded). */
const insecureSchemes = new Map<string, 'https' | 'http'>();

/** Most bytes of an error answer read for its message. */
const ERROR_BODY_LIMIT = 64 * 1024;

export class RegistryClient {
  readonly transport: Transport;
  readonly auth: Authenticator;
  private base: Promise<string> | null = null;

  readonly mirror: string | undefined;

  /**
   * `registry` as references name it (`docker.io`, `host:5000`); `where.mirror` an
   * endpoint URL used instead of the registry's own (`https://mirror.local:5000`);
   * `where.repository` the repository the credentials are for (auth.json may key by namespace).
   */
  constructor(readonly registry: string, private readonly opts: ClientOptions = {},
    where: { mirror?: string; repository?: string; transport?: Transport } = {}) {
    this.mirror = where.mirror;
    this.transport = where.transport ?? new Transport(opts);
    const explicit = opts.auth;
    this.auth = new Authenticator(this.transport, registry, async (): Promise<FoundCredentials | null> =>
      explicit ? { credentials: explicit, from: 'the auth option' } : findCredentials(registry, where.repository ?? '', opts.env ?? process.env));
  }

  get signal(): AbortSignal | undefined { return this.opts.signal; }

  /** Where the registry answers: https, or (insecure only) http when https does not work there. */
  baseUrl(): Promise<string> {
    this.base ??= this.resolveBase();
    return this.base;
  }

  private async resolveBase(): Promise<string> {
    if (this.mirror) return this.mirror.replace(/\/+$/, '');
    const host = endpointHost(this.registry);
    if (!this.transport.insecure) return `https://${host}`;
    // As docker with an insecure registry: HTTPS without verification first, then plain HTTP.
    // What a host speaks is remembered for this process (a second pull skips the probe).
    const known = insecureSchemes.get(host);
    if (known) return `${known}://${host}`;
    let scheme: 'https' | 'http';
    try {
      const res = await this.transport.send({ method: 'GET', url: `https://${host}/v2/`, ...(this.signal ? { signal: this.signal } : {}) });
      await res.body.dump({ limit: ERROR_BODY_LIMIT }).catch(() => undefined);
      if (res.status === 401) await this.auth.unauthorized(`https://${host}`, res.headers['www-authenticate'], undefined);
      scheme = 'https';
    } catch (err) {
      if (isAbort(err, this.signal)) throw err;
      scheme = 'http';
    }
    if (insecureSchemes.size >= 256) insecureSchemes.clear();
    insecureSchemes.set(host, scheme);
    return `${scheme}://${host}`;
  }

  /** A URL under the endpoint's /v2/ (or an absolute one, as upload Locations are). */
  async url(pathOrUrl: string): Promise<string> {
    if (/^https?:\/\//.test(pathOrUrl)) return pathOrUrl;
    return new URL(pathOrUrl, `${await this.baseUrl()}/`).href;
  }

  /**
   * Sends a request with authentication and retries; returns the final answer whatever
   * its status (see {@link fail}). Throws ERR_NETWORK when the registry stays unreachable.
   */
  async request(method: Method, pathOrUrl: string, o: RequestOptions): Promise<HttpResponse> {
    const url = await this.url(pathOrUrl);
    const origin = new URL(url).origin;
    const canRetry = o.retry ?? (method === 'GET' || method === 'HEAD' || typeof o.body === 'function');
    const attempts = canRetry ? this.transport.retry.attempts : 1;
    for (let attempt = 1; ; attempt++) {
      try {
        const first = await this.sendOnce(method, url, origin, o);
        let res = first.res;
        if (res.status === 401 && await this.auth.unauthorized(origin, res.headers['www-authenticate'], first.authorization)) {
          await res.body.dump({ limit: ERROR_BODY_LIMIT }).catch(() => undefined);
          res = (await this.sendOnce(method, url, origin, o)).res;
        }
        if (isRetryableStatus(res.status) && attempt < attempts) {
          const after = header(res.headers, 'retry-after');
          await res.body.dump({ limit: ERROR_BODY_LIMIT }).catch(() => undefined);
          await this.transport.wait(this.transport.delay(attempt, after), this.signal);
          continue;
        }
        return res;
      } catch (err) {
        if (isAbort(err, this.signal)) throw this.signal?.reason ?? err;
        if (err instanceof CairnError) throw err;
        if (this.transport.insecure && !this.mirror) insecureSchemes.delete(endpointHost(this.registry)); // probe again next time
        if (!isTransient(err)) throw networkError(`${method} ${url}`, err, attempt); // TLS refused, bad address: retrying cannot help
        if (attempt >= attempts) throw networkError(`${method} ${url}`, err, attempt);
        await this.transport.wait(this.transport.delay(attempt), this.signal);
      }
    }
  }

  private async sendOnce(method: Method, url: string, origin: string, o: RequestOptions): Promise<{ res: HttpResponse; authorization: string | undefined }> {
    const authorization = await this.auth.authorization(origin, o.scopes, this.signal);
    const body = typeof o.body === 'function' ? o.body() : o.body;
    const res = await this.transport.send({
      method, url, ...(o.headers ? { headers: o.headers } : {}), ...(authorization ? { authorization } : {}),
      ...(body !== undefined ? { body } : {}), ...(this.signal ? { signal: this.signal } : {}),
    });
    return { res, authorization };
  }

  /**
   * Turns an unexpected answer into the right CairnError, reading (a bounded part of) its
   * body for the registry's own error code: 401/403 ERR_AUTH, 404 `notFound`, else ERR_REGISTRY.
   */
  async fail(res: HttpResponse, what: string, notFound: ErrorCode = 'ERR_REGISTRY'): Promise<never> {
    let text = '';
    try { text = await readLimited(res.body, ERROR_BODY_LIMIT, 'the error answer'); } catch { res.body.destroy(); }
    if (res.status === 401 || res.status === 403) {
      const found = await this.auth.credentials().catch(() => null);
      const hint = found
        ? `the registry did not accept the credentials from ${found.from}; check them (cairn login ${this.registry})`
        : `no credentials for ${this.registry} were found (auth option, docker config.json, auth.json); run \`cairn login ${this.registry}\`, or the repository does not exist`;
      throw registryError('ERR_AUTH', `${what}: access denied by ${this.registry}: ${hint}`, res.status, text, this.registry);
    }
    const code: ErrorCode = res.status === 404 ? notFound : 'ERR_REGISTRY';
    throw registryError(code, `${what}: ${this.registry} answered ${res.status}`, res.status, text, this.registry);
  }

  async close(): Promise<void> {
    await this.transport.close();
  }
}

/** Throws unless the answer's status is one of `ok` (reading the error body for the message). */
export async function expectStatus(client: RegistryClient, res: HttpResponse, ok: number[], what: string, notFound: ErrorCode = 'ERR_REGISTRY'): Promise<void> {
  if (!ok.includes(res.status)) await client.fail(res, what, notFound);
}

export const pullScope = (repository: string) => `repository:${repository}:pull`;
export const pushScope = (repository: string) => `repository:${repository}:pull,push`;

export { CairnError };
