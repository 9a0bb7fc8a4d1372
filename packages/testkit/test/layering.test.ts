import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '@cairnfs/testkit';

// The package map as a rule: each public package's sources import only packages on a lower
// floor (sys and core at the bottom, archive above them, the drivers above that, image and
// the umbrella on top), drivers never import each other, and what a package imports is what
// its package.json declares. A move that breaks the layering fails here, not in review.
const FLOOR: Record<string, number> = {
  sys: 0, core: 1, archive: 2,
  overlay2: 3, vfs: 3, btrfs: 3, zfs: 3, devicemapper: 3, aufs: 3,
  image: 4, cairnfs: 5,
};

function sourcesOf(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sourcesOf(path);
    return path.endsWith('.ts') ? [path] : [];
  });
}

function workspaceImports(pkg: string): Set<string> {
  const found = new Set<string>();
  for (const file of sourcesOf(join(repoRoot, 'packages', pkg, 'src'))) {
    for (const m of readFileSync(file, 'utf8').matchAll(/from '(@cairnfs\/[a-z0-9]+|cairnfs)'/g)) {
      const name = m[1]!.replace('@cairnfs/', '');
      if (name !== pkg) found.add(name);
    }
  }
  return found;
}

describe('package layering', () => {
  for (const pkg of Object.keys(FLOOR)) {
    test(`${pkg} imports only packages below it and declares each one`, () => {
      const imports = workspaceImports(pkg);
      const upward = [...imports].filter((dep) => !(dep in FLOOR) || FLOOR[dep]! >= FLOOR[pkg]!);
      expect(upward).toEqual([]);
      const manifest = JSON.parse(readFileSync(join(repoRoot, 'packages', pkg, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
      const declared = new Set(Object.keys(manifest.dependencies ?? {}).filter((d) => d.startsWith('@cairnfs/')).map((d) => d.slice('@cairnfs/'.length)));
      expect([...imports].filter((dep) => !declared.has(dep))).toEqual([]);
      expect([...declared].filter((dep) => !imports.has(dep))).toEqual([]);
    });
  }
});
