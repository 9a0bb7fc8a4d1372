// A registry that lies or a network that fails: a proxy in front of a real registry
// tampers with its answers. Every lie is a CairnError and leaves nothing behind (no
// layers, no image, no driver layer, no partial download); every transient failure is
// retried within its bound, and a cut-off blob resumes with an HTTP Range request.
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isCairnError } from '@cairnfs/core';
import {
  describeBackend, freePort, registryMissing, relay, skopeo, startFaultProxy, startRegistry,
  type FaultProxy, type ProxyHandler, type RegistryFixture,
} from '@cairnfs/testkit';
import { fileEntry, packedTarOf as tarOf, dirEntry } from '@cairnfs/testkit';
import { freshStore, layersFor, seedDockerArchive, storeState } from './registry-fixture.js';

const FAST = { insecure: true, retry: { attempts: 3, baseDelayMs: 20, maxDelayMs: 100 } };

async function failure(p: Promise<unknown>): Promise<{ code: string; message: string; status?: number }> {
  try { await p; } catch (err) {
    return { code: isCairnError(err) ? err.code : `not a CairnError: ${(err as Error).name}`, message: (err as Error).message, ...(isCairnError(err) && err.status !== undefined ? { status: err.status } : {}) };
  }
  return { code: 'resolved', message: '' };
}

async function body(up: IncomingMessage): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of up) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

function send(res: ServerResponse, up: IncomingMessage, data: Buffer, extra: Record<string, string | undefined> = {}): void {
  const headers: Record<string, string | string[] | undefined> = { ...up.headers, 'content-length': String(data.length), ...extra };
  for (const [k, v] of Object.entries(headers)) if (v === undefined) delete headers[k];
  res.writeHead(up.statusCode ?? 200, headers);
  res.end(data);
}

describeBackend('registry', registryMissing(), () => {
  let reg: RegistryFixture;
  let proxy: FaultProxy;
  let work: string;
  let ref: string;
  let big: string; // digest of the large (incompressible) layer blob
  let config: string;
  let id: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'cairn-faults-'));
    reg = await startRegistry();
    proxy = await startFaultProxy(reg.url);
    const layers = [...await layersFor('faults'), await tarOf([dirEntry('data'), fileEntry('data/random.bin', randomBytes(4 << 20))])];
    ({ id } = await seedDockerArchive(reg, work, 'faults/app:1', layers));
    const raw = JSON.parse(await skopeo(['inspect', '--raw', ...reg.skopeoFlags('inspect'), `docker://${reg.host}/faults/app:1`])) as { config: { digest: string }; layers: Array<{ digest: string; size: number }> };
    big = raw.layers.reduce((a, b) => (b.size > a.size ? b : a)).digest;
    config = raw.config.digest;
    ref = `${proxy.host}/faults/app:1`;
  }, 60_000);
  afterAll(async () => {
    await proxy?.stop();
    await reg?.stop();
    await rm(work, { recursive: true, force: true });
  });
  afterEach(() => { proxy.setHandler(null); proxy.log.length = 0; });

  const isBlob = (req: IncomingMessage, digest: string) => req.method === 'GET' && req.url!.endsWith(`/blobs/${digest}`);
  const isManifest = (req: IncomingMessage) => req.url!.includes('/manifests/');
  const partials = async (root: string) => readdir(join(root, 'image', 'overlay2', 'downloads')).catch(() => [] as string[]);

  /** Runs a pull through `handler` that must fail with `code`, and checks nothing is left. */
  async function expectLie(handler: ProxyHandler, code: string, message: RegExp): Promise<{ status?: number }> {
    const s = await freshStore();
    try {
      proxy.setHandler(handler);
      const f = await failure(s.store.pull(ref, FAST));
      expect(f.code).toBe(code);
      expect(f.message).toMatch(message);
      expect(await storeState(s)).toEqual({ layers: 0, images: 0, driverLayers: [] });
      expect(await partials(s.root)).toEqual([]);
      return f;
    } finally {
      await s.close();
    }
  }

  test('a blob whose bytes do not hash to its digest (gzip still valid: only the mtime byte differs) is refused', async () => {
    await expectLie(async (req, res, forward) => {
      const up = await forward();
      if (!isBlob(req, big)) { relay(up, res); return; }
      const b = await body(up);
      b[4] ^= 0xff; // gzip header MTIME: gunzip does not care, the digest does
      send(res, up, b);
    }, 'ERR_INVALID_ARCHIVE', /hashes to sha256:.*not the blob the manifest names/);
  });

  test('a blob served with a Content-Length other than its descriptor\'s size is refused', async () => {
    await expectLie(async (req, res, forward) => {
      const up = await forward();
      if (!isBlob(req, big)) { relay(up, res); return; }
      send(res, up, Buffer.concat([await body(up), Buffer.alloc(1000)]));
    }, 'ERR_INVALID_ARCHIVE', /served as \d+ bytes, the manifest declares/);
  });

  /** Answers the big blob with `head` and then bytes without end (no Content-Length); counts what it sent. */
  function endless(head: 'real' | 'none', counter: { sent: number }): ProxyHandler {
    return async (req, res, forward) => {
      const up = await forward();
      if (!isBlob(req, big)) { relay(up, res); return; }
      const real = await body(up);
      const headers = { ...up.headers };
      delete headers['content-length'];
      res.writeHead(200, headers);
      if (head === 'real') res.write(real);
      const chunk = Buffer.alloc(64 * 1024, 1);
      const pump = () => { while (!res.destroyed && counter.sent < 1 << 30 && res.write(chunk)) counter.sent += chunk.length; };
      res.on('drain', pump);
      pump();
    };
  }

  test('an endless blob body of garbage is refused, and read no further than the declared size', async () => {
    const counter = { sent: 0 };
    await expectLie(endless('none', counter), 'ERR_INVALID_ARCHIVE', /corrupt/);
    expect(counter.sent).toBeLessThan(64 << 20);
  });

  test('a true blob followed by endless bytes: exactly the declared size is read and verified, the rest never', async () => {
    const counter = { sent: 0 };
    proxy.setHandler(endless('real', counter));
    const s = await freshStore();
    try {
      expect((await s.store.pull(ref, FAST)).id).toBe(id);
      expect(counter.sent).toBeLessThan(64 << 20);
    } finally {
      await s.close();
    }
  });

  test('a wrong config is refused before any layer is fetched', async () => {
    await expectLie(async (req, res, forward) => {
      const up = await forward();
      if (!isBlob(req, config)) { relay(up, res); return; }
      const b = await body(up);
      send(res, up, Buffer.from(b.toString('utf8').replace('"os":"linux"', '"os":"linux" ')).subarray(0, b.length));
    }, 'ERR_INVALID_ARCHIVE', /does not match its digest/);
    expect(proxy.log.filter((l) => l.path.includes('/blobs/') && !l.path.endsWith(config))).toEqual([]);
  });

  test('a redirect loop ends after a bounded number of hops with ERR_REGISTRY', async () => {
    const f = await expectLie((req, res) => {
      res.writeHead(307, { location: req.url! });
      res.end();
    }, 'ERR_REGISTRY', /redirect/);
    expect(f.status).toBe(307);
    expect(proxy.log.length).toBeLessThanOrEqual(12);
  });

  test('a huge manifest is refused, declared (Content-Length) or not', async () => {
    for (const declared of [true, false]) {
      proxy.log.length = 0;
      await expectLie(async (req, res, forward) => {
        const up = await forward();
        if (!isManifest(req)) { relay(up, res); return; }
        up.resume();
        const huge = Buffer.from(`{"schemaVersion":2,"layers":[${'"x",'.repeat(1_500_000)}"x"]}`);
        const headers: Record<string, string | string[] | undefined> = { ...up.headers, ...(declared ? { 'content-length': String(huge.length) } : {}) };
        if (!declared) delete headers['content-length'];
        delete headers['docker-content-digest'];
        res.writeHead(200, headers);
        res.end(huge);
      }, 'ERR_INVALID_ARCHIVE', /more than the 4194304 bytes|larger than the 4194304 bytes/);
    }
  });

  test('a manifest that does not hash to the digest the registry claims for it is refused', async () => {
    await expectLie(async (req, res, forward) => {
      const up = await forward();
      if (!isManifest(req)) { relay(up, res); return; }
      send(res, up, Buffer.concat([await body(up), Buffer.from('\n')]));
    }, 'ERR_INVALID_ARCHIVE', /registry says its digest is/);
  });

  test('a foreign (non-distributable) layer is ERR_NOT_SUPPORTED before any blob is fetched', async () => {
    await expectLie(async (req, res, forward) => {
      const up = await forward();
      if (!isManifest(req)) { relay(up, res); return; }
      const m = JSON.parse((await body(up)).toString('utf8')) as { layers: Array<{ mediaType: string; urls?: string[] }> };
      m.layers[0]!.mediaType = 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip';
      m.layers[0]!.urls = ['https://example.invalid/layer'];
      send(res, up, Buffer.from(JSON.stringify(m)), { 'docker-content-digest': undefined });
    }, 'ERR_NOT_SUPPORTED', /foreign/);
    expect(proxy.log.filter((l) => l.path.includes('/blobs/'))).toEqual([]);
  });

  test('a layer over maxUncompressedBytes is refused as a bomb, as on import', async () => {
    const s = await freshStore();
    try {
      const f = await failure(s.store.pull(ref, { ...FAST, maxUncompressedBytes: 1 << 20 }));
      expect(f.code).toBe('ERR_INVALID_ARCHIVE');
      expect(f.message).toMatch(/maxUncompressedBytes/);
      expect(await storeState(s)).toEqual({ layers: 0, images: 0, driverLayers: [] });
    } finally {
      await s.close();
    }
  });

  test('503s and a connection cut mid-blob are retried; the cut blob resumes with Range from where it broke', async () => {
    let blobTries = 0;
    proxy.setHandler(async (req, res, forward) => {
      const up = await forward();
      if (!isBlob(req, big)) { relay(up, res); return; }
      blobTries++;
      if (blobTries <= 2) { up.resume(); res.writeHead(503, { 'retry-after': '0' }); res.end(); return; }
      if (blobTries === 3) { // half the blob, then the connection breaks
        const b = await body(up);
        res.writeHead(200, { ...up.headers });
        res.write(b.subarray(0, b.length >> 1), () => setTimeout(() => res.socket?.destroy(), 20));
        return;
      }
      relay(up, res);
    });
    const s = await freshStore();
    try {
      const img = await s.store.pull(ref, FAST);
      expect(img.id).toBe(id);
      const tries = proxy.log.filter((l) => l.path.endsWith(`/blobs/${big}`));
      expect(tries.map((t) => t.status)).toEqual([503, 503, 200, 206]);
      expect(tries[3]!.range).toMatch(/^bytes=\d+-$/);
      expect(Number(tries[3]!.range!.slice(6, -1))).toBeGreaterThan(0);
      expect(await partials(s.root)).toEqual([]);
    } finally {
      await s.close();
    }
  });

  test('an aborted pull leaves no layer or image, keeps the partial blob; the next pull resumes it with Range; gc drops partials', async () => {
    const ac = new AbortController();
    let stalled: ServerResponse | undefined;
    proxy.setHandler(async (req, res, forward) => {
      const up = await forward();
      if (!isBlob(req, big)) { relay(up, res); return; }
      const b = await body(up);
      res.writeHead(200, { ...up.headers });
      // 1 MiB, then nothing; the abort comes once the client had time to take it
      res.write(b.subarray(0, 1 << 20), () => setTimeout(() => ac.abort(), 300));
      stalled = res;
    });
    const s = await freshStore();
    try {
      const err = await s.store.pull(ref, { ...FAST, signal: ac.signal }).catch((e: unknown) => e);
      expect((err as Error).name).toBe('AbortError');
      stalled?.destroy();
      expect(await storeState(s)).toEqual({ layers: 0, images: 0, driverLayers: [] });
      const kept = await partials(s.root);
      expect(kept).toEqual([`${big.slice(7)}.partial`]);
      const have = (await stat(join(s.root, 'image', 'overlay2', 'downloads', kept[0]!))).size;
      expect(have).toBeGreaterThan(0);
      expect(have).toBeLessThanOrEqual(1 << 20);

      proxy.setHandler(null);
      proxy.log.length = 0;
      const img = await s.store.pull(ref, FAST);
      expect(img.id).toBe(id);
      expect(proxy.log.find((l) => l.path.endsWith(`/blobs/${big}`))).toMatchObject({ range: `bytes=${have}-`, status: 206 });
      expect(await partials(s.root)).toEqual([]);

      // another abort, then gc: the partial goes
      const ac2 = new AbortController();
      await s.store.removeImage(img.id);
      proxy.setHandler(async (req, res, forward) => {
        const up = await forward();
        if (!isBlob(req, big)) { relay(up, res); return; }
        res.writeHead(200, { ...up.headers });
        up.once('data', (c: Buffer) => { res.write(c, () => setTimeout(() => ac2.abort(), 300)); stalled = res; });
      });
      const err2 = await s.store.pull(ref, { ...FAST, signal: ac2.signal }).catch((e: unknown) => e);
      expect((err2 as Error).name).toBe('AbortError');
      stalled?.destroy();
      expect(await partials(s.root)).toHaveLength(1);
      await s.store.gc();
      expect(await partials(s.root)).toEqual([]);
    } finally {
      await s.close();
    }
  });

  test('a registry that stays down is ERR_NETWORK after the bounded retries; one that keeps failing is ERR_REGISTRY with its status', async () => {
    const s = await freshStore();
    try {
      const port = await freePort();
      const t0 = Date.now();
      const down = await failure(s.store.pull(`127.0.0.1:${port}/x/y:1`, FAST));
      expect(down.code).toBe('ERR_NETWORK');
      expect(down.message).toMatch(/ECONNREFUSED.*after 3 tries/);
      expect(Date.now() - t0).toBeLessThan(5000);

      proxy.setHandler((_req, res) => { res.writeHead(500, { 'content-type': 'application/json' }); res.end('{"errors":[{"code":"UNKNOWN","message":"disk on fire"}]}'); });
      const broken = await failure(s.store.pull(ref, FAST));
      expect(broken).toMatchObject({ code: 'ERR_REGISTRY', status: 500 });
      expect(broken.message).toMatch(/disk on fire/);
      expect(proxy.log.filter((l) => l.path.includes('/manifests/'))).toHaveLength(3);
    } finally {
      await s.close();
    }
  });
});
