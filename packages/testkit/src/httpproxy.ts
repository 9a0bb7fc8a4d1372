import { request as httpRequest, createServer, type IncomingMessage, type ServerResponse } from 'node:http';

/**
 * A fault-injecting HTTP proxy on 127.0.0.1 in front of a real (plain HTTP) registry:
 * everything is the real registry's answer unless the test's handler changes it — a
 * blob cut off mid-stream, a 503, a wrong byte, an endless body, a redirect loop. The
 * Host header is passed through, so the Locations the registry builds point back here.
 */
export interface ProxyLogEntry { method: string; path: string; range?: string; authorization?: boolean; status?: number }

/**
 * Decides one request: call `forward()` for the registry's answer (then pass it on with
 * {@link relay} or send something else), or answer directly. Returning without answering is
 * not allowed.
 */
export type ProxyHandler = (req: IncomingMessage, res: ServerResponse, forward: () => Promise<IncomingMessage>, body: Buffer) => Promise<void> | void;

export interface FaultProxy {
  /** `127.0.0.1:PORT` */
  readonly host: string;
  readonly url: string;
  readonly log: ProxyLogEntry[];
  /** Replaces the handler (null: pass everything through). */
  setHandler(h: ProxyHandler | null): void;
  stop(): Promise<void>;
}

/** Sends the registry's answer on unchanged. */
export function relay(up: IncomingMessage, res: ServerResponse): void {
  res.writeHead(up.statusCode ?? 502, up.headers);
  up.pipe(res);
}

export async function startFaultProxy(upstream: string): Promise<FaultProxy> {
  const target = new URL(upstream);
  const log: ProxyLogEntry[] = [];
  let handler: ProxyHandler | null = null;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const entry: ProxyLogEntry = { method: req.method ?? '', path: req.url ?? '', ...(req.headers.range ? { range: req.headers.range } : {}), authorization: !!req.headers.authorization };
      log.push(entry);
      res.on('close', () => { entry.status = res.statusCode; }); // what the client got, not what the registry said
      const forward = () => new Promise<IncomingMessage>((resolve, reject) => {
        const up = httpRequest({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, resolve);
        up.on('error', reject);
        up.end(body);
      });
      const done = (err: unknown) => { if (!res.headersSent) { res.writeHead(502); res.end(String(err)); } else res.destroy(); };
      try {
        const h = handler;
        if (h) Promise.resolve(h(req, res, forward, body)).catch(done);
        else forward().then((up) => relay(up, res), done);
      } catch (err) { done(err); }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    host: `127.0.0.1:${port}`, url: `http://127.0.0.1:${port}`, log,
    setHandler: (h) => { handler = h; },
    stop: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}
