// The HTTP layer under the registry client, on undici (the client inside Node's fetch,
// used directly for its streaming bodies, per-agent TLS settings and timeouts). One job:
// send one request and follow its redirects safely. Authentication and retries are the
// caller's (client.ts), since both need to know what the request means.
import { rootCertificates } from 'node:tls';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { CairnError } from '@cairnfs/core';
import { isAbort, isTransient, registryError } from './errors.js';
import { defaultCertsDirs, hostTls } from './certsd.js';

export interface TlsOptions {
  /** Extra CA certificate(s), PEM: trusted in addition to Node's bundled roots. */
  ca?: string | Buffer | Array<string | Buffer>;
  /** Client certificate and key (PEM) for registries that require mutual TLS. */
  cert?: string | Buffer;
  key?: string | Buffer;
}

export interface RetryOptions {
  /** Tries per request, the first included (default 5). */
  attempts?: number;
  /** First back-off; doubled each retry with jitter (default 250 ms). */
  baseDelayMs?: number;
  /** Longest single wait, also the cap on a Retry-After the registry asks for (default 10 s). */
  maxDelayMs?: number;
}

export interface TransportOptions {
  tls?: TlsOptions;
  /**
   * certs.d roots: per registry host (`host[:port]`) a directory of CA certificates
   * (`*.crt`) and a client pair (`x.cert` + `x.key`), as docker and podman read them.
   * Default /etc/containers/certs.d and /etc/docker/certs.d (and the per-user ones for a
   * user other than root); `[]` reads none. What `tls` gives is used as well.
   */
  certsDirs?: string[];
  /** Allow plain HTTP and unverified TLS. Never implied, not even for loopback. */
  insecure?: boolean;
  retry?: RetryOptions;
  /** Longest wait for a response's headers, and for the next chunk of a body (default 60 s). */
  timeoutMs?: number;
  userAgent?: string;
}

export type Headers = Record<string, string | string[] | undefined>;

export interface HttpRequest {
  method: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  url: string;
  headers?: Record<string, string>;
  /** Sent only to the origin of `url` (never to where a redirect leads elsewhere). */
  authorization?: string;
  body?: Buffer | Readable | string;
  signal?: AbortSignal;
}

export interface HttpResponse {
  status: number;
  headers: Headers;
  body: Readable & { text(): Promise<string>; dump(opts?: { limit?: number }): Promise<void> };
  /** The URL that answered (after redirects). */
  url: string;
}

/** Most redirects one request follows; a loop ends here with ERR_REGISTRY. */
export const MAX_REDIRECTS = 10;

export function header(h: Headers, name: string): string | undefined {
  const v = h[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

export class Transport {
  /** One connection pool per host: each may have its own certs.d trust and client pair. */
  private readonly agents = new Map<string, Promise<Agent>>();
  readonly insecure: boolean;
  readonly retry: Required<RetryOptions>;
  private readonly userAgent: string;
  private readonly tls: TlsOptions;
  private readonly certsDirs: string[];
  private readonly timeout: number;

  constructor(opts: TransportOptions = {}) {
    this.insecure = opts.insecure === true;
    this.tls = opts.tls ?? {};
    this.certsDirs = opts.certsDirs ?? defaultCertsDirs();
    this.timeout = opts.timeoutMs ?? 60_000;
    this.retry = { attempts: opts.retry?.attempts ?? 5, baseDelayMs: opts.retry?.baseDelayMs ?? 250, maxDelayMs: opts.retry?.maxDelayMs ?? 10_000 };
    this.userAgent = opts.userAgent ?? 'cairn (+https://www.npmjs.com/package/cairnfs)';
  }

  /** The pool for `host` (`name[:port]`), made on first use with that host's certs.d files. */
  private agentFor(host: string): Promise<Agent> {
    let agent = this.agents.get(host);
    if (!agent) {
      agent = this.makeAgent(host);
      agent.catch(() => this.agents.delete(host)); // a broken certs.d is read again next time
      this.agents.set(host, agent);
    }
    return agent;
  }

  private async makeAgent(host: string): Promise<Agent> {
    const files = await hostTls(host, this.certsDirs);
    const given = this.tls.ca === undefined ? [] : Array.isArray(this.tls.ca) ? this.tls.ca : [this.tls.ca];
    const extra = [...given.map(String), ...(files?.ca ?? [])];
    const cert = this.tls.cert ?? files?.cert;
    const key = this.tls.cert ? this.tls.key : files?.key;
    return new Agent({
      connect: {
        // Node's `ca` replaces the default roots; a user's CA is meant to be added to them.
        ...(extra.length ? { ca: [...rootCertificates, ...extra] } : {}),
        ...(cert ? { cert } : {}),
        ...(key ? { key } : {}),
        rejectUnauthorized: !this.insecure,
        timeout: this.timeout,
      },
      headersTimeout: this.timeout,
      bodyTimeout: this.timeout,
    });
  }

  async close(): Promise<void> {
    const agents = [...this.agents.values()];
    this.agents.clear();
    await Promise.all(agents.map((a) => a.then((x) => x.close()).catch(() => undefined)));
  }

  /**
   * Sends a request and follows redirects (at most {@link MAX_REDIRECTS}): the
   * Authorization header goes only to the original origin, an https → http downgrade is
   * refused unless `insecure`, and 303 (and 301/302 of a non-GET) become a GET without body.
   */
  async send(req: HttpRequest): Promise<HttpResponse> {
    const origin = new URL(req.url).origin;
    let url = req.url;
    let method = req.method;
    let body = req.body;
    for (let hop = 0; ; hop++) {
      const target = new URL(url);
      if (target.protocol !== 'https:' && target.protocol !== 'http:') {
        throw registryError('ERR_REGISTRY', `the registry redirected to ${target.protocol} URL ${url}, which is not HTTP`, undefined);
      }
      const headers: Record<string, string> = { 'user-agent': this.userAgent, ...req.headers };
      if (req.authorization && target.origin === origin) headers.authorization = req.authorization;
      if (hop > 0 && target.origin !== origin) {
        for (const k of Object.keys(headers)) if (k.toLowerCase() === 'authorization') delete headers[k];
      }
      const res = await request(url, {
        method, headers, dispatcher: await this.agentFor(target.host),
        ...(body !== undefined ? { body } : {}),
        ...(req.signal ? { signal: req.signal } : {}),
      });
      if (![301, 302, 303, 307, 308].includes(res.statusCode)) {
        return { status: res.statusCode, headers: res.headers as Headers, body: res.body as HttpResponse['body'], url };
      }
      await res.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
      const location = header(res.headers as Headers, 'location');
      if (!location) throw registryError('ERR_REGISTRY', `the registry answered ${method} ${url} with a redirect without a Location`, res.statusCode);
      if (hop + 1 > MAX_REDIRECTS) {
        throw registryError('ERR_REGISTRY', `more than ${MAX_REDIRECTS} redirects for ${req.method} ${req.url} (a redirect loop?)`, res.statusCode, {}, req.url);
      }
      const next = new URL(location, url);
      if (target.protocol === 'https:' && next.protocol === 'http:' && !this.insecure) {
        throw registryError('ERR_REGISTRY', `the registry redirected ${url} to plain HTTP (${next.href}); refused without insecure: true`, res.statusCode);
      }
      if (res.statusCode === 303 || ((res.statusCode === 301 || res.statusCode === 302) && method !== 'GET' && method !== 'HEAD')) {
        method = 'GET';
        body = undefined;
      } else if (body !== undefined && typeof body !== 'string' && !Buffer.isBuffer(body)) {
        // A stream was consumed by the first hop: it cannot be sent again.
        throw registryError('ERR_REGISTRY', `the registry redirected an upload (${req.method} ${url}); uploads are not re-sent to another location`, res.statusCode);
      }
      url = next.href;
    }
  }

  /** The wait before retry number `n` (1-based): exponential with jitter, capped; or what Retry-After asks (capped too). */
  delay(n: number, retryAfter?: string): number {
    const asked = retryAfter !== undefined && /^\d+$/.test(retryAfter.trim()) ? Number(retryAfter) * 1000 : undefined;
    const exp = this.retry.baseDelayMs * 2 ** (n - 1);
    return Math.min(this.retry.maxDelayMs, asked ?? exp * (0.75 + Math.random() * 0.5));
  }

  /** Waits, or rejects at once when the signal aborts. */
  async wait(ms: number, signal?: AbortSignal): Promise<void> {
    await sleep(ms, undefined, signal ? { signal } : {});
  }
}

/** A status worth retrying: the registry (or a proxy in front) is overloaded or restarting. */
export function isRetryableStatus(status: number): boolean {
  return status === 429 || status === 500 || status === 502 || status === 503 || status === 504;
}

/** Wraps a connection failure that outlived its retries. */
export function networkError(what: string, err: unknown, attempts: number): CairnError {
  const code = (err as { code?: string }).code ?? '';
  const tls = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ALTNAME|EPROTO|SSL|TLS/i.test(`${code} ${(err as Error).message}`);
  const hint = tls
    ? 'The TLS connection failed: if the registry uses a private CA, put it in /etc/docker/certs.d/HOST:PORT/ca.crt or pass it as tls.ca (cairn --tls-ca FILE); if it speaks plain HTTP or you accept an unverified certificate, use insecure: true (--insecure).'
    : 'Check that the registry is up and reachable (address, port, proxy, firewall).';
  return new CairnError('ERR_NETWORK',
    `${what}: ${(err as Error).message ?? String(err)}${code ? ` (${code})` : ''}${attempts > 1 ? `, still after ${attempts} tries` : ''}. ${hint}`, { cause: err });
}

export { isAbort, isTransient };
