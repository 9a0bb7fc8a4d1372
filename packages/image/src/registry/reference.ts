// Image references as Docker parses them (distribution's `reference` grammar with
// Docker's normalisation): `busybox` is `docker.io/library/busybox:latest`, a first path
// component with a `.` or `:` (or `localhost`, or an upper-case letter) is a registry
// host, `@sha256:…` pins a digest. Pure functions, no I/O: a bad reference is refused
// before any request is made.
import { CairnError } from '@cairnfs/core';

/** Docker Hub's canonical name; its API lives at {@link DOCKER_HUB_ENDPOINT}. */
export const DOCKER_HUB = 'docker.io';
export const DOCKER_HUB_ENDPOINT = 'registry-1.docker.io';
/** The key docker's config.json uses for Docker Hub credentials (and what helpers are asked for). */
export const DOCKER_HUB_AUTH_KEY = 'https://index.docker.io/v1/';

const NAME_MAX = 255;
// One path component: lower-case alphanumerics joined by `.`, `_`, `__` or runs of `-`.
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
// A host name or IPv4 address with an optional port, or a bracketed IPv6 address.
const DOMAIN = /^(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$/;

export interface Reference {
  /** Registry as named (`docker.io`, `localhost:5000`, `ghcr.io`). */
  registry: string;
  /** Repository path inside the registry (`library/busybox`). */
  repository: string;
  tag?: string;
  digest?: string;
}

const invalid = (ref: string, why: string) => new CairnError('ERR_INVALID_OPTION',
  `invalid image reference ${JSON.stringify(ref)}: ${why}`, { subject: ref });

/**
 * Parses a reference as `docker pull` does. Neither tag nor digest: `latest` is implied
 * by callers that need one ({@link withDefaultTag}); only sha256 digests are accepted.
 */
export function parseReference(ref: string): Reference {
  if (typeof ref !== 'string' || ref.length === 0) throw invalid(String(ref), 'it is empty');
  if (/^[a-f0-9]{64}$/.test(ref)) throw invalid(ref, 'a 64-hex-digit string is an image id, not a reference; use name@sha256:<hex> to pull by digest');
  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw invalid(ref, `${JSON.stringify(digest)} is not a digest (algorithm:hex)`);
    if (!/^sha256:[0-9a-f]{64}$/.test(digest)) throw invalid(ref, 'only sha256 digests (64 lower-case hex digits) are supported');
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw invalid(ref, `${JSON.stringify(tag)} is not a valid tag (letters, digits, _ . -; at most 128; not starting with . or -)`);
  }
  const slash = rest.indexOf('/');
  const first = slash < 0 ? '' : rest.slice(0, slash);
  let registry: string;
  let repository: string;
  // As docker's splitDockerDomain: a first component that cannot be a repository name is a host.
  if (slash >= 0 && (first.includes('.') || first.includes(':') || first === 'localhost' || first !== first.toLowerCase())) {
    registry = first;
    repository = rest.slice(slash + 1);
    if (!DOMAIN.test(registry)) throw invalid(ref, `${JSON.stringify(registry)} is not a valid registry host[:port]`);
  } else {
    registry = DOCKER_HUB;
    repository = rest;
  }
  if (registry === 'index.docker.io') registry = DOCKER_HUB;
  if (registry === DOCKER_HUB && !repository.includes('/')) repository = `library/${repository}`;
  if (repository.length === 0) throw invalid(ref, 'the repository name is empty');
  if (repository !== repository.toLowerCase()) throw invalid(ref, 'repository names must be lower case');
  for (const c of repository.split('/')) {
    if (!COMPONENT.test(c)) throw invalid(ref, `${JSON.stringify(c)} is not a valid repository path component (lower-case letters, digits, separators . _ __ -)`);
  }
  if (registry.length + 1 + repository.length > NAME_MAX) throw invalid(ref, `the name is longer than ${NAME_MAX} characters`);
  return { registry, repository, ...(tag !== undefined ? { tag } : {}), ...(digest !== undefined ? { digest } : {}) };
}

/** `latest` when the reference has neither tag nor digest. */
export function withDefaultTag(r: Reference): Reference {
  return r.tag === undefined && r.digest === undefined ? { ...r, tag: 'latest' } : r;
}

/** `registry/repository` — the fully qualified name, as docker normalises it. */
export function nameOf(r: Reference): string {
  return `${r.registry}/${r.repository}`;
}

/** The normalised reference: `docker.io/library/busybox:1.36`, `host/x@sha256:…`. */
export function formatReference(r: Reference): string {
  return `${nameOf(r)}${r.tag !== undefined ? `:${r.tag}` : ''}${r.digest !== undefined ? `@${r.digest}` : ''}`;
}

/** Docker's short form: `busybox:1.36` for `docker.io/library/busybox:1.36`. */
export function familiarName(r: Reference): string {
  let name = nameOf(r);
  if (r.registry === DOCKER_HUB) {
    name = r.repository.startsWith('library/') && r.repository.split('/').length === 2 ? r.repository.slice(8) : r.repository;
  }
  return `${name}${r.tag !== undefined ? `:${r.tag}` : ''}${r.digest !== undefined ? `@${r.digest}` : ''}`;
}

/** The host the registry's API answers on (Docker Hub's is not docker.io). */
export function endpointHost(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_ENDPOINT : registry;
}

/**
 * The store keys under which a local image may be recorded for `ref`: as given (with
 * `:latest` when untagged), fully qualified, and docker's short form. Imports keep the
 * names a tarball carries (`busybox:1.36`), pulls the qualified one; either finds both.
 * Not a reference (an image id, say): just the given form.
 */
export function localNameCandidates(ref: string): string[] {
  const given = /[:@]/.test(ref.slice(ref.lastIndexOf('/') + 1)) ? ref : `${ref}:latest`;
  let parsed: Reference;
  try { parsed = withDefaultTag(parseReference(ref)); } catch { return [given]; }
  return [...new Set([given, formatReference(parsed), familiarName(parsed)])];
}
