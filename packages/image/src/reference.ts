// Image references: which `name:tag` strings are tags at all, and how a user's reference
// picks an image. Tags come from image archives (RepoTags, OCI annotations) as well as
// from callers, so a tag must never be able to pose as an image id: an archive that
// tagged itself `sha256:<id of a trusted image>` or `<12 hex>:latest` used to be what
// `createContainer(<trusted id>)` got (issue 13, finding 8).
//
// The grammar is Docker's reference grammar (parseReference in registry/reference.ts),
// restricted to name + tag (a digest names content rather than pointing at it). As Docker,
// a reference of 64 hex digits is refused (it reads as an image id); beyond Docker, so are
// a repository name of 64 hex digits with a tag, and the repository `sha256` with a hex tag
// (`sha256:<id>`), which read as ids too.
import { CairnError } from '@cairnfs/core';
import { parseReference } from './registry/reference.js';

const HEX64 = /^[0-9a-f]{64}$/;
const HEX = /^[0-9a-f]+$/;
/** Longest reference accepted as a tag: Docker's 255-character name, ':' and a 128-character tag. */
const MAX_REF_LENGTH = 255 + 1 + 128;

/**
 * Why `ref` is not a valid `name[:tag]` (or, with `allowDigest`, `name@sha256:<hex>`, the key
 * a pull by digest records), or undefined when it is.
 */
function referenceProblem(ref: string, allowDigest: boolean): string | undefined {
  if (ref.length > MAX_REF_LENGTH + (allowDigest ? 72 : 0)) return `it is longer than ${MAX_REF_LENGTH} characters`;
  const at = ref.indexOf('@');
  if (at >= 0 && !allowDigest) return 'a digest reference (name@sha256:…) names content, not a tag';
  try {
    parseReference(ref);
  } catch (err) {
    return (err as Error).message.replace(/^invalid image reference "[^"]*": /, '');
  }
  const named = at >= 0 ? ref.slice(0, at) : ref;
  const slash = named.lastIndexOf('/');
  const colon = named.lastIndexOf(':');
  const [name, tag] = colon > slash ? [named.slice(0, colon), named.slice(colon + 1)] : [named, 'latest'];
  if (HEX64.test(name)) return 'a repository name of 64 hex digits would read as an image id';
  if (name === 'sha256' && HEX.test(tag)) return 'sha256:<hex> would read as an image id';
  return undefined;
}

/** Adds ':latest' to a bare name, as docker does. */
export function normalizeTag(ref: string): string {
  const slash = ref.lastIndexOf('/');
  return ref.slice(slash + 1).includes(':') ? ref : `${ref}:latest`;
}

/** True when `ref` is a valid `name[:tag]` (see the module comment). */
export function isValidTag(ref: string): boolean {
  return referenceProblem(ref, false) === undefined;
}

/**
 * True when `key` may name an image in the store: a valid tag, or the `name@sha256:<hex>`
 * a pull by digest records. False for anything that could be read as an image id.
 */
export function isStoreKey(key: string): boolean {
  return referenceProblem(key, true) === undefined;
}

/**
 * `ref` as a normalised `name:tag`, or a CairnError naming the problem: `code` is
 * ERR_INVALID_OPTION for a caller's tag, ERR_INVALID_ARCHIVE for one read from an image.
 */
export function validTag(ref: unknown, code: 'ERR_INVALID_OPTION' | 'ERR_INVALID_ARCHIVE', where: string): string {
  const problem = typeof ref === 'string' ? referenceProblem(ref, false) : 'it is not a string';
  if (problem !== undefined) {
    const shown = typeof ref === 'string' && ref.length > 80 ? `${ref.slice(0, 80)}…` : String(ref);
    throw new CairnError(code, `${where}: ${JSON.stringify(shown)} is not a valid image tag: ${problem}`, { subject: String(ref).slice(0, 300) });
  }
  return normalizeTag(ref as string);
}

/** What a user's image reference can mean: a full id, an id prefix, and/or a tag. */
export interface RefMeaning {
  /** `sha256:<64 hex>` when the reference is a full image id (with or without `sha256:`): then it is nothing else. */
  fullId?: string;
  /** 4-63 hex digits that may begin an image id. */
  idPrefix?: string;
  /** The normalised tag (or `name@digest` key) it would name. */
  tag?: string;
}

/** Splits a reference into its possible meanings (no lookup). */
export function refMeaning(ref: string): RefMeaning {
  const hex = ref.startsWith('sha256:') ? ref.slice(7) : ref;
  if (HEX64.test(hex)) return { fullId: `sha256:${hex}` };
  const out: RefMeaning = {};
  if (hex.length >= 4 && hex.length < 64 && HEX.test(hex)) out.idPrefix = hex;
  if (isStoreKey(ref)) out.tag = normalizeTag(ref);
  return out;
}
