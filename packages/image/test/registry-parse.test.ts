// The pure parts of the registry client: references as docker parses them, challenges,
// manifests and platform choice. No I/O.
import { familiarName, formatReference, parsePlatform, parseReference, withDefaultTag } from '@cairnfs/image';
import { parseChallenges } from '../src/registry/challenge.js';
import { localNameCandidates } from '../src/registry/reference.js';
import { choosePlatform, layerCompression, parseManifest, MediaTypes, type Descriptor, type Platform } from '../src/registry/manifest.js';

const D = `sha256:${'a'.repeat(64)}`;

describe('references (docker normalisation)', () => {
  test.each([
    ['busybox', 'docker.io/library/busybox:latest', 'busybox:latest'],
    ['busybox:1.36', 'docker.io/library/busybox:1.36', 'busybox:1.36'],
    ['library/busybox', 'docker.io/library/busybox:latest', 'busybox:latest'],
    ['me/app', 'docker.io/me/app:latest', 'me/app:latest'],
    ['index.docker.io/me/app:2', 'docker.io/me/app:2', 'me/app:2'],
    ['localhost/app', 'localhost/app:latest', 'localhost/app:latest'],
    ['localhost:5000/a/b/c:v1.0-rc_1', 'localhost:5000/a/b/c:v1.0-rc_1', 'localhost:5000/a/b/c:v1.0-rc_1'],
    ['127.0.0.1:5000/x', '127.0.0.1:5000/x:latest', '127.0.0.1:5000/x:latest'],
    ['ghcr.io/org/img__x.y-z', 'ghcr.io/org/img__x.y-z:latest', 'ghcr.io/org/img__x.y-z:latest'],
    ['[::1]:5000/x:1', '[::1]:5000/x:1', '[::1]:5000/x:1'],
    [`busybox@${D}`, `docker.io/library/busybox@${D}`, `busybox@${D}`],
    [`busybox:1@${D}`, `docker.io/library/busybox:1@${D}`, `busybox:1@${D}`],
    ['Registry.Example.com/x', 'Registry.Example.com/x:latest', 'Registry.Example.com/x:latest'],
  ])('%s → %s', (input, full, familiar) => {
    const r = withDefaultTag(parseReference(input));
    expect(formatReference(r)).toBe(full);
    expect(familiarName(r)).toBe(familiar);
  });

  test('localhost:5000 alone is docker.io/library/localhost with tag 5000, as docker reads it', () => {
    expect(parseReference('localhost:5000')).toEqual({ registry: 'docker.io', repository: 'library/localhost', tag: '5000' });
  });

  test.each([
    ['', /empty/], ['Busybox', /lower case/], ['a'.repeat(64), /image id/], ['x:', /not a valid tag/], ['x:-a', /not a valid tag/],
    [`x:${'t'.repeat(129)}`, /not a valid tag/], ['x@sha256:123', /not a digest/], [`x@sha512:${'a'.repeat(128)}`, /only sha256/],
    ['a//b', /path component/], ['a/b_', /path component/], ['-a', /path component/], ['host:port:1/x', /registry host/],
    [`h.io/${'a'.repeat(260)}`, /longer than 255/], ['a b', /path component/], ['x/.hidden', /path component/],
  ])('%j is refused (%s)', (input, why) => {
    expect(() => parseReference(input)).toThrow(why);
    try { parseReference(input); } catch (err) { expect((err as { code: string }).code).toBe('ERR_INVALID_OPTION'); }
  });

  test('local name candidates cover the given, qualified and familiar forms', () => {
    expect(localNameCandidates('busybox')).toEqual(['busybox:latest', 'docker.io/library/busybox:latest']);
    expect(localNameCandidates('docker.io/library/busybox:1')).toEqual(['docker.io/library/busybox:1', 'busybox:1']);
    expect(localNameCandidates('abc123')).toEqual(['abc123:latest', 'docker.io/library/abc123:latest']);
    expect(localNameCandidates('NOT a ref')).toEqual(['NOT a ref:latest']);
  });
});

describe('WWW-Authenticate challenges', () => {
  test('Bearer with quoted params (commas and escapes inside quotes), and several challenges in one header', () => {
    expect(parseChallenges('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push"')).toEqual([
      { scheme: 'bearer', params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:samalba/my-app:pull,push' } },
    ]);
    expect(parseChallenges(['Basic realm="a \\"quoted\\" realm"', 'Bearer realm=https://x/token , service=svc'])).toEqual([
      { scheme: 'basic', params: { realm: 'a "quoted" realm' } },
      { scheme: 'bearer', params: { realm: 'https://x/token', service: 'svc' } },
    ]);
    expect(parseChallenges('Basic realm="r", Bearer realm="t"')).toEqual([
      { scheme: 'basic', params: { realm: 'r' } }, { scheme: 'bearer', params: { realm: 't' } },
    ]);
    expect(parseChallenges(undefined)).toEqual([]);
    // garbage gives no usable challenge (and no exception)
    expect(parseChallenges('=== garbage "unterminated').filter((c) => c.params.realm)).toEqual([]);
    expect(parseChallenges('Bearer realm="unterminated')).toEqual([{ scheme: 'bearer', params: { realm: 'unterminated' } }]);
  });

  test('linear in its input: a megabyte of separators parses at once', () => {
    const t0 = performance.now();
    parseChallenges(`Bearer ${'a=b,'.repeat(250_000)}`);
    parseChallenges(`Bearer realm="${'\\"'.repeat(500_000)}`);
    expect(performance.now() - t0).toBeLessThan(2000);
  });
});

describe('manifests and platforms', () => {
  const desc = (platform?: Platform, mediaType: string = MediaTypes.ociManifest): Descriptor => ({ mediaType, digest: D, size: 10, ...(platform ? { platform } : {}) });

  test('an index picks os/arch/variant; arm64 means v8; unlabelled entries only when all are', () => {
    const list = [
      desc({ os: 'linux', architecture: 'amd64' }), desc({ os: 'linux', architecture: 'arm', variant: 'v6' }),
      desc({ os: 'linux', architecture: 'arm', variant: 'v7' }), desc({ os: 'linux', architecture: 'arm64', variant: 'v8' }),
      desc({ os: 'unknown', architecture: 'unknown' }),
    ];
    expect(choosePlatform(list, parsePlatform('linux/amd64'))).toBe(list[0]);
    expect(choosePlatform(list, parsePlatform('linux/arm/v7'))).toBe(list[2]);
    expect(choosePlatform(list, parsePlatform('linux/aarch64'))).toBe(list[3]);
    expect(choosePlatform(list, parsePlatform('linux/arm64/v8'))).toBe(list[3]);
    expect(choosePlatform(list, parsePlatform('windows/amd64'))).toBeUndefined();
    expect(choosePlatform([desc()], parsePlatform('linux/amd64'))).toEqual(desc());
    expect(choosePlatform([desc(), desc({ os: 'linux', architecture: 's390x' })], parsePlatform('linux/amd64'))).toBeUndefined();
    expect(() => parsePlatform('linux')).toThrow(/os\/arch/);
  });

  test('manifests are validated field by field; schema 1 and artifacts are not images; foreign layers are refused', () => {
    expect(() => parseManifest(Buffer.from('{"schemaVersion":1}'), undefined)).toThrow(/schema 1/);
    expect(() => parseManifest(Buffer.from('nope'), undefined)).toThrow(/not JSON/);
    expect(() => parseManifest(Buffer.from('{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:1","size":1},"layers":[]}'), undefined)).toThrow(/sha256 digest/);
    expect(() => parseManifest(Buffer.from(`{"schemaVersion":2,"config":{"mediaType":"x","digest":"${D}","size":-1},"layers":[]}`), undefined)).toThrow(/size/);
    const m = parseManifest(Buffer.from(`{"schemaVersion":2,"config":{"mediaType":"x","digest":"${D}","size":1},"layers":[]}`), `${MediaTypes.dockerManifest}; charset=utf-8`);
    expect(m).toMatchObject({ kind: 'image', mediaType: MediaTypes.dockerManifest });
    expect(layerCompression(desc(undefined, MediaTypes.ociLayerZstd), 0)).toBe('zstd');
    expect(layerCompression(desc(undefined, MediaTypes.dockerLayer), 0)).toBe('gzip');
    expect(layerCompression(desc(undefined, MediaTypes.ociLayer), 0)).toBe('none');
    expect(() => layerCompression(desc(undefined, MediaTypes.dockerForeignLayer), 0)).toThrow(/foreign/);
    expect(() => layerCompression(desc(undefined, 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip'), 0)).toThrow(/non-distributable/);
    expect(() => layerCompression(desc(undefined, 'application/vnd.cncf.helm.chart.content.v1.tar+gzip'), 0)).toThrow(/not an image layer/);
  });
});
