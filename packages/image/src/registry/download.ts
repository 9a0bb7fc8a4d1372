// Fetching from a registry with every byte checked: manifests and configs read whole
// (bounded, digest-checked), layer blobs streamed with their digest and size checked as
// they pass. A blob stream keeps what it received in a partial file, so a pull that was
// cut off (network, abort, crash) resumes with an HTTP Range request next time; a
// connection that breaks mid-blob is resumed from where it broke, within the retry bound.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, rm, stat, type FileHandle } from 'node:fs/promises';
import { CairnError } from '@cairnfs/core';
import { readLimited } from './auth.js';
import { expectStatus, pullScope, type RegistryClient } from './client.js';
import { corrupt, isAbort, isTransient } from './errors.js';
import { header, networkError, type HttpResponse } from './http.js';
import { MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, parseManifest, type Descriptor, type Manifest } from './manifest.js';

export interface FetchedManifest {
  bytes: Buffer;
  digest: string;
  mediaType: string;
  manifest: Manifest;
}

const sha256 = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Reads a small body of a declared size bound, refusing a longer one before it is all in memory. */
async function readBounded(client: RegistryClient, res: HttpResponse, max: number, what: string): Promise<Buffer> {
  const declared = Number(header(res.headers, 'content-length') ?? NaN);
  if (Number.isFinite(declared) && declared > max) {
    res.body.destroy();
    throw corrupt(`${what} is ${declared} bytes, more than the ${max} bytes cairn accepts`);
  }
  const parts: Buffer[] = [];
  let n = 0;
  try {
    for await (const c of res.body) {
      n += (c as Buffer).length;
      if (n > max) { res.body.destroy(); throw corrupt(`${what} is larger than the ${max} bytes cairn accepts`); }
      parts.push(c as Buffer);
    }
  } catch (err) {
    if (err instanceof CairnError || isAbort(err, client.signal)) throw err;
    throw networkError(`reading ${what}`, err, 1);
  }
  return Buffer.concat(parts);
}

/**
 * A manifest by tag or digest. By digest, the bytes must hash to it; by tag, to the
 * Docker-Content-Digest the registry claims, when it claims one. A missing manifest is
 * ERR_IMAGE_NOT_FOUND.
 */
export async function fetchManifest(client: RegistryClient, repository: string, reference: string, expect?: { digest: string; size?: number }): Promise<FetchedManifest> {
  const what = `manifest ${client.registry}/${repository}:${reference}`.replace(/:sha256:/, '@sha256:');
  const res = await client.request('GET', `v2/${repository}/manifests/${reference}`, { scopes: [pullScope(repository)], headers: { accept: MANIFEST_ACCEPT } });
  if (res.status === 404) {
    await client.fail(res, `no image ${client.registry}/${repository}${reference.startsWith('sha256:') ? '@' : ':'}${reference} in the registry (check the name and tag)`, 'ERR_IMAGE_NOT_FOUND');
  }
  await expectStatus(client, res, [200], `fetching ${what}`, 'ERR_IMAGE_NOT_FOUND');
  const bytes = await readBounded(client, res, Math.min(MAX_MANIFEST_BYTES, expect?.size ?? Infinity), what);
  const digest = sha256(bytes);
  if (expect && digest !== expect.digest) throw corrupt(`${what} hashes to ${digest}, not ${expect.digest}`, expect.digest);
  if (expect?.size !== undefined && bytes.length !== expect.size) throw corrupt(`${what} is ${bytes.length} bytes, its descriptor says ${expect.size}`, expect.digest);
  const claimed = header(res.headers, 'docker-content-digest');
  if (!expect && claimed && claimed.startsWith('sha256:') && claimed !== digest) {
    throw corrupt(`${what} hashes to ${digest}, but the registry says its digest is ${claimed}`, claimed);
  }
  const contentType = header(res.headers, 'content-type');
  const manifest = parseManifest(bytes, contentType);
  return { bytes, digest, mediaType: manifest.mediaType, manifest };
}

/** A small blob (an image config) read whole: size and digest checked against its descriptor. */
export async function fetchSmallBlob(client: RegistryClient, repository: string, desc: Descriptor, max: number, what: string): Promise<Buffer> {
  if (desc.size > max) throw corrupt(`${what} is declared as ${desc.size} bytes, more than the ${max} bytes cairn accepts`, desc.digest);
  const res = await client.request('GET', `v2/${repository}/blobs/${desc.digest}`, { scopes: [pullScope(repository)] });
  await expectStatus(client, res, [200], `fetching ${what} ${desc.digest}`);
  const bytes = await readBounded(client, res, desc.size, what);
  if (bytes.length !== desc.size) throw corrupt(`${what} is ${bytes.length} bytes, the manifest says ${desc.size}`, desc.digest);
  if (sha256(bytes) !== desc.digest) throw corrupt(`${what} does not match its digest ${desc.digest}`, desc.digest);
  return bytes;
}

export interface BlobStreamOptions {
  /** Keep received bytes here and resume from them (deleted once the blob is complete and verified). */
  partial?: string;
  /** Bytes received (from the partial file or the network). */
  onBytes?: (n: number) => void;
  /** Keep the partial file once it holds the whole verified blob (a prefetch; the next stream reads it). */
  keepComplete?: boolean;
}

const CONTENT_RANGE = /^bytes (\d+)-(\d+)\/(\d+|\*)$/;

/**
 * Streams a layer blob, verified: more bytes than the descriptor's size stop the stream
 * at once, and the digest is compared before the last chunk is handed on, so a consumer
 * that reads to the end never takes a wrong blob for a right one. A wrong blob's partial
 * file is deleted; a cut-off one's is kept for the next try.
 */
export async function* blobStream(client: RegistryClient, repository: string, desc: Descriptor, o: BlobStreamOptions = {}): AsyncGenerator<Buffer> {
  const hash = createHash('sha256');
  let done = 0;
  let fh: FileHandle | undefined;
  // The partial file is kept only when a broken connection or an abort ended the stream:
  // that is what a next pull resumes. A consumer that stopped (a failed apply), a lie or
  // a success leave none.
  let resumable = false;
  let complete = false;
  let res: HttpResponse | null = null;
  const what = `layer blob ${desc.digest}`;
  try {
    let have = o.partial ? await stat(o.partial).then((s) => s.size, () => 0) : 0;
    if (have > desc.size) { await rm(o.partial!, { force: true }); have = 0; }

    if (have < desc.size || desc.size === 0) {
      res = await get(client, repository, desc, have);
      if (have > 0 && res.status !== 206) { // the registry ignored (200) or refused (416) the range: start over
        if (res.status === 416) await res.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
        await rm(o.partial!, { force: true });
        have = 0;
        if (res.status === 416) res = await get(client, repository, desc, 0);
      }
    }
    if (have > 0) {
      // Bytes a previous try received: hashed and passed on again, not fetched again.
      for await (const c of createReadStream(o.partial!, { end: have - 1, highWaterMark: 1 << 20 })) {
        hash.update(c as Buffer);
        done += (c as Buffer).length;
        o.onBytes?.((c as Buffer).length);
        if (done === desc.size) { yield* finish(c as Buffer); return; }
        yield c as Buffer;
      }
    }
    if (o.partial) fh = await open(o.partial, have > 0 ? 'a' : 'w', 0o600);

    let skip = 0; // bytes at the start of an answer already received (a 200 to a resume)
    let stalls = 0;
    for (;;) {
      if (!res) throw new Error('unreachable');
      try {
        if (res.status === 206) checkContentRange(res, done, desc);
        else skip = done;
        for await (const chunk of res.body) {
          let c = chunk as Buffer;
          if (skip > 0) { const drop = Math.min(skip, c.length); skip -= drop; c = c.subarray(drop); if (!c.length) continue; }
          // Exactly the declared size is read and verified; whatever a registry sends beyond
          // it (without a Content-Length that says so, which get() refuses) is never read.
          if (done + c.length > desc.size) c = c.subarray(0, desc.size - done);
          hash.update(c);
          if (fh) await fh.write(c);
          done += c.length;
          o.onBytes?.(c.length);
          if (done === desc.size) { yield* finish(c); return; }
          yield c;
          stalls = 0;
        }
        if (desc.size === 0) { yield* finish(Buffer.alloc(0)); return; }
        throw Object.assign(new Error(`the answer ended after ${done} of ${desc.size} bytes`), { code: 'ECONNRESET' });
      } catch (err) {
        if (err instanceof CairnError || isAbort(err, client.signal) || !isTransient(err)) throw err;
        if (++stalls >= client.transport.retry.attempts) throw networkError(`downloading ${what}`, err, stalls);
        await client.transport.wait(client.transport.delay(stalls), client.signal);
        res = await get(client, repository, desc, done);
        if (res.status !== 206 && res.status !== 200) await expectStatus(client, res, [206], `resuming ${what}`);
      }
    }
  } catch (err) {
    resumable = isAbort(err, client.signal) || isTransient(err) || (err instanceof CairnError && err.code === 'ERR_NETWORK');
    throw err;
  } finally {
    // A consumer that stops early (abort, a failed apply) must not leave the answer open.
    if (res && !res.body.readableEnded) res.body.destroy();
    await fh?.close().catch(() => undefined);
    if (!resumable && !(complete && o.keepComplete) && o.partial) await rm(o.partial, { force: true });
  }

  // Verifies before the last chunk goes out; on success the partial file has served its purpose.
  async function* finish(last: Buffer): AsyncGenerator<Buffer> {
    const got = `sha256:${hash.digest('hex')}`;
    if (got !== desc.digest) throw corrupt(`${what} hashes to ${got}: the bytes the registry sent are not the blob the manifest names`, desc.digest);
    complete = true;
    if (last.length) yield last;
  }
}

async function get(client: RegistryClient, repository: string, desc: Descriptor, from: number): Promise<HttpResponse> {
  const res = await client.request('GET', `v2/${repository}/blobs/${desc.digest}`, {
    scopes: [pullScope(repository)], ...(from > 0 ? { headers: { range: `bytes=${from}-` } } : {}),
  });
  if (res.status === 200 || res.status === 206 || (from > 0 && res.status === 416)) {
    const len = Number(header(res.headers, 'content-length') ?? NaN);
    if (res.status === 200 && Number.isFinite(len) && len !== desc.size) {
      res.body.destroy();
      throw corrupt(`layer blob ${desc.digest} is served as ${len} bytes, the manifest declares ${desc.size}`, desc.digest);
    }
    return res;
  }
  if (res.status === 404) await client.fail(res, `the registry has no blob ${desc.digest} although the manifest names it (BLOB_UNKNOWN)`);
  await expectStatus(client, res, [200], `fetching layer blob ${desc.digest}`);
  return res;
}

function checkContentRange(res: HttpResponse, from: number, desc: Descriptor): void {
  const m = CONTENT_RANGE.exec(header(res.headers, 'content-range') ?? '');
  if (!m || Number(m[1]) !== from || (m[3] !== '*' && Number(m[3]) !== desc.size) || Number(m[2]) >= desc.size) {
    res.body.destroy();
    throw new CairnError('ERR_REGISTRY', `the registry answered a resume of blob ${desc.digest} from byte ${from} with Content-Range ${JSON.stringify(header(res.headers, 'content-range'))}`, { status: 206, subject: desc.digest });
  }
}

export { readLimited };
