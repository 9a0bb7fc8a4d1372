// Per-registry TLS files laid out as docker and podman keep them: a directory per
// registry host (`host` or `host:port`) under a certs.d root, holding CA certificates
// (`*.crt`) and client certificate/key pairs (`name.cert` + `name.key`). A user who has
// set up /etc/docker/certs.d for docker gets the same trust here without passing options.
import { readdir, readFile, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { CairnError } from '@cairnfs/core';

export interface HostTls {
  /** PEM CA certificates, added to the bundled roots. */
  ca: string[];
  /** The client pair, when the directory has one. */
  cert?: string;
  key?: string;
  /** The directory these came from, for messages. */
  dir: string;
}

/** A certs.d file larger than this is not a certificate; refused rather than read. */
const MAX_PEM_BYTES = 1024 * 1024;

/**
 * The certs.d roots searched, first match wins per host (as containers/image does):
 * podman's and docker's system directories, then, for a user other than root, the
 * per-user ones rootless podman and rootless docker read.
 */
export function defaultCertsDirs(env: Record<string, string | undefined> = process.env): string[] {
  const dirs = ['/etc/containers/certs.d', '/etc/docker/certs.d'];
  if (process.getuid?.() !== 0) {
    const config = env.XDG_CONFIG_HOME || join(env.HOME || homedir(), '.config');
    dirs.push(join(config, 'containers', 'certs.d'), join(config, 'docker', 'certs.d'));
  }
  return dirs;
}

async function readPem(path: string): Promise<string> {
  const st = await stat(path);
  if (!st.isFile() || st.size > MAX_PEM_BYTES) {
    throw new CairnError('ERR_INVALID_OPTION', `${path} is not a PEM file of at most ${MAX_PEM_BYTES} bytes; remove it from the certs.d directory`, { subject: path });
  }
  return readFile(path, 'utf8');
}

/**
 * The TLS files for `host` (`127.0.0.1:5000`, `registry-1.docker.io`) from the first
 * root that has a directory for it, or undefined. A `.cert` without its `.key` (or the
 * reverse) is ERR_INVALID_OPTION naming both, as docker refuses it too.
 */
export async function hostTls(host: string, roots: readonly string[]): Promise<HostTls | undefined> {
  // A host name never holds a path separator; refuse one rather than leave the root.
  if (host.includes('/') || host === '.' || host === '..') return undefined;
  for (const root of roots) {
    const dir = join(root, host);
    let names: string[];
    try {
      names = (await readdir(dir)).sort();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') continue;
      throw new CairnError('ERR_INVALID_OPTION', `cannot read the TLS directory ${dir}: ${(err as Error).message}`, { subject: dir, cause: err });
    }
    const out: HostTls = { ca: [], dir };
    for (const name of names) {
      if (name.endsWith('.crt')) out.ca.push(await readPem(join(dir, name)));
    }
    const certs = names.filter((n) => n.endsWith('.cert'));
    const keys = names.filter((n) => n.endsWith('.key'));
    for (const c of certs) {
      const key = `${c.slice(0, -'.cert'.length)}.key`;
      if (!keys.includes(key)) {
        throw new CairnError('ERR_INVALID_OPTION', `client certificate ${join(dir, c)} has no key ${key} beside it (CA certificates must end in .crt)`, { subject: join(dir, c) });
      }
    }
    for (const k of keys) {
      const cert = `${k.slice(0, -'.key'.length)}.cert`;
      if (!certs.includes(cert)) {
        throw new CairnError('ERR_INVALID_OPTION', `client key ${join(dir, k)} has no certificate ${cert} beside it`, { subject: join(dir, k) });
      }
    }
    if (certs.length > 0) {
      out.cert = await readPem(join(dir, certs[0]!));
      out.key = await readPem(join(dir, `${certs[0]!.slice(0, -'.cert'.length)}.key`));
    }
    return out;
  }
  return undefined;
}
