// Blob uploads (OCI distribution "push"): start a session with POST, send the bytes —
// one PUT of the whole blob (monolithic), one streamed PATCH, or PATCHes of a fixed size
// with Content-Range (chunked) — and close it with PUT ?digest=. Plus HEAD to skip blobs
// the repository has, and cross-repository mount (POST ?mount=&from=) to skip the bytes.
import { Readable } from 'node:stream';
import { CairnError } from '@cairnfs/core';
import { expectStatus, pullScope, pushScope, type RegistryClient } from './client.js';
import { header, type HttpResponse } from './http.js';

const OCTETS = 'application/octet-stream';

/** True when the repository has the blob (and, if given, at that size). */
export async function blobExists(client: RegistryClient, repository: string, digest: string, size?: number): Promise<boolean> {
  const res = await client.request('HEAD', `v2/${repository}/blobs/${digest}`, { scopes: [pushScope(repository)] });
  await res.body.dump().catch(() => undefined);
  if (res.status === 404) return false;
  await expectStatus(client, res, [200], `checking for blob ${digest} in ${repository}`);
  const len = Number(header(res.headers, 'content-length') ?? NaN);
  return size === undefined || !Number.isFinite(len) || len === size;
}

/** The absolute URL of an upload session from an answer's Location. */
async function locationOf(client: RegistryClient, res: HttpResponse, what: string): Promise<string> {
  const loc = header(res.headers, 'location');
  if (!loc) throw new CairnError('ERR_REGISTRY', `${what}: the registry answered ${res.status} without a Location for the upload`, { status: res.status });
  return new URL(loc, res.url).href;
}

function withDigest(location: string, digest: string): string {
  const u = new URL(location);
  u.searchParams.set('digest', digest);
  return u.href;
}

/**
 * Tries to mount `digest` from `from` into `repository` (same registry). True when
 * mounted; false when the registry would rather have it uploaded (its 202 session is
 * cancelled, the caller starts its own).
 */
export async function mountBlob(client: RegistryClient, repository: string, digest: string, from: string): Promise<boolean> {
  const q = new URLSearchParams({ mount: digest, from });
  const res = await client.request('POST', `v2/${repository}/blobs/uploads/?${q}`, { scopes: [pushScope(repository), pullScope(from)], retry: true });
  await res.body.dump().catch(() => undefined);
  if (res.status === 201) return true;
  if (res.status === 202) { await cancelUpload(client, repository, await locationOf(client, res, 'mount')); return false; }
  if (res.status === 401 || res.status === 403 || res.status === 404) return false; // no read access to `from`: upload instead
  await expectStatus(client, res, [201, 202], `mounting blob ${digest} from ${from}`);
  return false;
}

export async function startUpload(client: RegistryClient, repository: string): Promise<string> {
  const res = await client.request('POST', `v2/${repository}/blobs/uploads/`, { scopes: [pushScope(repository)], retry: true, headers: { 'content-length': '0' } });
  await expectStatus(client, res, [202], `starting an upload to ${client.registry}/${repository}`);
  await res.body.dump().catch(() => undefined);
  return locationOf(client, res, 'starting an upload');
}

export async function cancelUpload(client: RegistryClient, repository: string, location: string): Promise<void> {
  try {
    const res = await client.request('DELETE', location, { scopes: [pushScope(repository)], retry: false });
    await res.body.dump().catch(() => undefined);
  } catch { /* best effort: the registry expires abandoned sessions */ }
}

/** Monolithic: the whole blob in one PUT (its digest and size known beforehand). */
export async function putBlob(client: RegistryClient, repository: string, location: string, digest: string, size: number, body: () => Buffer | Readable): Promise<void> {
  const res = await client.request('PUT', withDigest(location, digest), {
    scopes: [pushScope(repository)], retry: false, body,
    headers: { 'content-type': OCTETS, 'content-length': String(size) },
  });
  await expectStatus(client, res, [201], `uploading blob ${digest}`);
  await checkCreated(res, digest);
}

/** One PATCH carrying the whole stream (length unknown beforehand); returns the session's next Location. */
export async function patchStream(client: RegistryClient, repository: string, location: string, body: AsyncIterable<Buffer>): Promise<string> {
  const res = await client.request('PATCH', location, {
    scopes: [pushScope(repository)], retry: false, body: () => Readable.from(body), headers: { 'content-type': OCTETS },
  });
  await expectStatus(client, res, [202], 'uploading a blob');
  await res.body.dump().catch(() => undefined);
  return locationOf(client, res, 'uploading a blob');
}

/** One chunk of a chunked upload, at byte `start` of the blob; returns the next Location. */
export async function patchChunk(client: RegistryClient, repository: string, location: string, chunk: Buffer, start: number): Promise<string> {
  const res = await client.request('PATCH', location, {
    scopes: [pushScope(repository)], retry: false, body: chunk,
    headers: { 'content-type': OCTETS, 'content-length': String(chunk.length), 'content-range': `${start}-${start + chunk.length - 1}` },
  });
  await expectStatus(client, res, [202], `uploading bytes ${start}-${start + chunk.length - 1} of a blob`);
  await res.body.dump().catch(() => undefined);
  return locationOf(client, res, 'uploading a chunk');
}

/** Closes an upload session: the registry checks the bytes against `digest`. */
export async function finishUpload(client: RegistryClient, repository: string, location: string, digest: string): Promise<void> {
  const res = await client.request('PUT', withDigest(location, digest), { scopes: [pushScope(repository)], retry: false, headers: { 'content-length': '0' } });
  await expectStatus(client, res, [201], `completing the upload of blob ${digest}`);
  await checkCreated(res, digest);
}

async function checkCreated(res: HttpResponse, digest: string): Promise<void> {
  await res.body.dump().catch(() => undefined);
  const said = header(res.headers, 'docker-content-digest');
  if (said && said !== digest) {
    throw new CairnError('ERR_REGISTRY', `the registry stored blob ${digest} under digest ${said}`, { status: res.status, subject: digest });
  }
}
