// Image references: which `name:tag` strings are tags at all, and how a user's reference
// picks an image. Tags come from image archives (RepoTags, OCI annotations) as well as
// from callers, so a tag must never be able to pose as an image id: an archive that
// tagged itself `sha256:<id of a trusted image>` or `<12 hex>:latest` used to be what
// `createContainer(<trusted id>)` got (issue 13, finding 8).
//
// The grammar is Docker's reference grammar (distribution/reference), restricted to
// name + tag (no digests, which name content rather than point at it):
//   reference  := [domain '/'] component ('/' component)* [':' tag]
//   domain     := host-component ('.' host-component)* [':' port]   (or an [IPv6] literal)
//   component  := [a-z0-9]+ (separator [a-z0-9]+)*, separator := '.' | '_' | '__' | '-'+
//   tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
// with the name at most 255 characters. As Docker, a repository name of 64 hex digits is
// refused (it reads as an image id); beyond Docker, so is the repository `sha256` with a
// hex tag, which reads as a digest.
import { CairnError } from '@cairnfs/core';

/** Longest repository name (Docker's NameTotalLengthMax). */
export const MAX_NAME_LENGTH = 255;
/** Longest tag, after the ':' (Docker's). */
export const MAX_TAG_LENGTH = 128;

const COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const HOST_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN = `(?:${HOST_COMPONENT}(?:\\.${HOST_COMPONENT})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?`;
const NAME = new RegExp(`^(?:${DOMAIN}/)?${COMPONENT}(?:/${COMPONENT})*$`);
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const HEX64 = /^[0-9a-f]{64}$/;
const HEX = /^[0-9a-f]+$/;

/** Why `ref` is not a valid `name[:tag]`, or undefined when it is. */
function tagProblem(ref: string): string | undefined {
  // Length first: the regular expressions then only ever see short strings.
  if (ref.length > MAX_NAME_LENGTH + 1 + MAX_TAG_LENGTH) return `it is longer than ${MAX_NAME_LENGTH + 1 + MAX_TAG_LENGTH} characters`;
  if (ref.includes('@')) return 'a digest reference (name@sha256:…) names content, not a tag';
  const slash = ref.lastIndexOf('/');
  const colon = ref.lastIndexOf(':');
  const [name, tag] = colon > slash ? [ref.slice(0, colon), ref.slice(colon + 1)] : [ref, 'latest'];
  if (name.length === 0) return 'the repository name is empty';
  if (name.length > MAX_NAME_LENGTH) return `the repository name is longer than ${MAX_NAME_LENGTH} characters`;
  if (!NAME.test(name)) return 'the repository name is not lower-case letters, digits and separators (. _ __ -), optionally after a registry host';
  if (!TAG.test(tag)) return `the tag is not 1-${MAX_TAG_LENGTH} letters, digits, '_', '.' or '-' (not starting with '.' or '-')`;
  if (HEX64.test(name)) return 'a repository name of 64 hex digits would read as an image id';
  if (name === 'sha256' && HEX.test(tag)) return 'sha256:<hex> would read as an image id';
  return undefined;
}

/** True when `ref` is a valid `name[:tag]` (see the module comment). */
export function isValidTag(ref: string): boolean {
  return tagProblem(ref) === undefined;
}

/** Adds ':latest' to a bare name, as docker does. */
export function normalizeTag(ref: string): string {
  const slash = ref.lastIndexOf('/');
  return ref.slice(slash + 1).includes(':') ? ref : `${ref}:latest`;
}

/**
 * `ref` as a normalised `name:tag`, or a CairnError naming the problem: `code` is
 * ERR_INVALID_OPTION for a caller's tag, ERR_INVALID_ARCHIVE for one read from an image.
 */
export function validTag(ref: unknown, code: 'ERR_INVALID_OPTION' | 'ERR_INVALID_ARCHIVE', where: string): string {
  const problem = typeof ref === 'string' ? tagProblem(ref) : 'it is not a string';
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
  /** The normalised tag it would name. */
  tag?: string;
}

/** Splits a reference into its possible meanings (no lookup). */
export function refMeaning(ref: string): RefMeaning {
  const hex = ref.startsWith('sha256:') ? ref.slice(7) : ref;
  if (HEX64.test(hex)) return { fullId: `sha256:${hex}` };
  const out: RefMeaning = {};
  if (hex.length >= 4 && hex.length < 64 && HEX.test(hex)) out.idPrefix = hex;
  if (isValidTag(ref)) out.tag = normalizeTag(ref);
  return out;
}
