import { readFileSync } from 'node:fs';
import { readdir, readFile, readlink, symlink, unlink, writeFile } from 'node:fs/promises';
import { errnoCode, isValidId } from '@cairnfs/core';
import { LINK_FILE_MODE, Layout, generateShortName, idFromDirName, isShortName, parseLinkFile } from './layout.js';

/**
 * Keeping `l/` and the per-layer `link` files consistent. After a power loss either can
 * be missing (the symlink is made before the layer directory is renamed into place, the
 * link file is written inside it); moby then fails to mount. cairn rebuilds whichever
 * half is missing from the other, and only invents a new name when both are gone.
 */

export interface LinkRepairReport {
  /** Dangling `l/` entries removed (their layer is gone). */
  removedLinks: string[];
  /** Layers whose `l/` symlink was recreated. */
  relinked: string[];
  /** Layers whose `link` file was rewritten from their `l/` symlink (or a new name). */
  rewrittenLinkFiles: string[];
}

/** The layer id an `l/` symlink target names (`../<id>/diff`), or undefined. */
export function idFromLinkTarget(target: string): string | undefined {
  const m = /^\.\.\/([^/]+)\/diff$/.exec(target);
  const id = m ? idFromDirName(m[1]!) : undefined;
  return id !== undefined && isValidId(id) ? id : undefined;
}

/** Reads a layer's short name, or undefined when the link file is missing or corrupt. */
export async function readLinkFile(layout: Layout, id: string): Promise<string | undefined> {
  try {
    return parseLinkFile(await readFile(layout.linkFile(id), 'utf8'));
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  }
}

/** readLinkFile without the pool round trip (a few bytes of a local file). */
export function readLinkFileSync(layout: Layout, id: string): string | undefined {
  try {
    return parseLinkFile(readFileSync(layout.linkFile(id), 'utf8'));
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  }
}

/** Lists layer ids: the home's directories that are valid ids (`l`, `.staging`, … are not layers). */
export async function listLayerIds(layout: Layout): Promise<string[]> {
  let entries;
  try {
    entries = await readdir(layout.home, { withFileTypes: true });
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return [];
    throw err;
  }
  const ids: string[] = [];
  for (const e of entries) {
    const id = e.isDirectory() ? idFromDirName(e.name) : undefined;
    if (id !== undefined && isValidId(id)) ids.push(id);
  }
  return ids;
}

/** Makes `l/<short>` point at the layer's diff, replacing a wrong or dangling entry. */
export async function ensureSymlink(layout: Layout, id: string, short: string): Promise<boolean> {
  const path = layout.linkPath(short);
  try {
    if ((await readlink(path)) === layout.linkTarget(id)) return false;
    await unlink(path);
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'EINVAL') await unlink(path); // not a symlink
    else if (code !== 'ENOENT') throw err;
  }
  await symlink(layout.linkTarget(id), path);
  return true;
}

/**
 * Sweeps and repairs the whole home: removes `l/` entries whose layer is gone, recreates
 * missing symlinks, rewrites missing link files. Runs at open, and again from `get` when a
 * lower's link turns out to be missing.
 */
export async function repairLinks(layout: Layout): Promise<LinkRepairReport> {
  const report: LinkRepairReport = { removedLinks: [], relinked: [], rewrittenLinkFiles: [] };
  const ids = new Set(await listLayerIds(layout));
  const linkOwner = new Map<string, string>(); // id -> short, from l/
  let names: string[] = [];
  try {
    names = await readdir(layout.linkDir);
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
  }
  for (const name of names) {
    let target: string | undefined;
    try {
      target = await readlink(layout.linkPath(name));
    } catch {
      target = undefined;
    }
    const owner = target === undefined ? undefined : idFromLinkTarget(target);
    if (!isShortName(name) || owner === undefined || !ids.has(owner)) {
      await unlink(layout.linkPath(name)).catch(() => undefined);
      report.removedLinks.push(name);
      continue;
    }
    linkOwner.set(owner, name);
  }
  for (const id of ids) {
    let short = await readLinkFile(layout, id);
    if (short === undefined) {
      short = linkOwner.get(id) ?? generateShortName();
      await writeFile(layout.linkFile(id), short, { mode: LINK_FILE_MODE });
      report.rewrittenLinkFiles.push(id);
    }
    if (linkOwner.get(id) !== short && (await ensureSymlink(layout, id, short))) report.relinked.push(id);
  }
  return report;
}
