import { createHash } from 'node:crypto';
import { CairnError } from '@cairnfs/core';

const DIGEST = /^sha256:[0-9a-f]{64}$/;

/** True for `sha256:<64 hex>`, the only digest algorithm cairn accepts (as moby's layer store). */
export function isDigest(s: unknown): s is string {
  return typeof s === 'string' && DIGEST.test(s);
}

/** Throws ERR_INVALID_ARCHIVE unless `s` is a sha256 digest; `what` names it in the message. */
export function assertDigest(s: unknown, what: string): string {
  if (!isDigest(s)) {
    throw new CairnError('ERR_INVALID_ARCHIVE',
      `${what} is ${JSON.stringify(s)}, not a sha256 digest ("sha256:" + 64 lower-case hex digits); the image is corrupt or uses an unsupported digest algorithm`,
      { subject: String(s) });
  }
  return s;
}

/** The 64 hex digits of a digest: the name of its directory or blob file. */
export function hexOf(digest: string): string {
  return digest.slice('sha256:'.length);
}

export function sha256Of(data: Uint8Array | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/**
 * The chain id of a layer, as the OCI image spec and moby define it: the base layer's
 * chain id is its diff id; every other is sha256(parentChainId + " " + diffId). It names
 * a layer *with all its ancestors*, so two images share a layer only when they share
 * the whole stack beneath it.
 */
export function chainIdOf(parentChainId: string | null, diffId: string): string {
  return parentChainId === null ? diffId : sha256Of(`${parentChainId} ${diffId}`);
}

/** Chain ids of a whole stack of diff ids, bottom first. */
export function chainIds(diffIds: readonly string[]): string[] {
  const out: string[] = [];
  let parent: string | null = null;
  for (const d of diffIds) {
    parent = chainIdOf(parent, d);
    out.push(parent);
  }
  return out;
}
