// The directories cairn keeps its state in (the storage root, each driver home, the image
// store) must be controlled by nobody but the caller and root: a user who owns or may
// write one can rename layer directories, overlay2's l/ links or metadata under the
// driver's feet (issue 13, finding 12). moby creates its root 0711 and tightens an
// existing one to 0711 at every start; its homes 0710/0700.
import { constants as fsConstants } from 'node:fs';
import { lstat, mkdir, open } from 'node:fs/promises';
import { CairnError } from './errors.js';

/** The storage root's mode, as moby's (others may traverse to reach mounted layers, never list or write). */
export const ROOT_DIR_MODE = 0o711;

function foreign(path: string, what: string, uid: number, link: boolean): CairnError {
  const me = process.geteuid?.() ?? 0;
  return new CairnError('ERR_INVALID_OPTION',
    `${what} ${path} ${link ? 'is a symlink' : 'is'} owned by uid ${uid}, not by root or this process (uid ${me}): ` +
    'that user could rename or replace what cairn keeps there. Remove it, or chown it to root, if it is yours.',
    { subject: path });
}

/**
 * Makes `path` a directory only root and this process control, with exactly `mode`:
 * creates it (and missing parents) if needed; refuses (ERR_INVALID_OPTION, naming the path
 * and the owner) one owned by another user, or a symlink another user made; and chmods an
 * existing one with other bits to `mode`, as moby tightens a loose root. The checks and
 * the chmod act on an fd of the directory, so they concern one and the same inode.
 * `what` names it in messages ("driver home").
 */
export async function secureDir(path: string, mode: number, what: string): Promise<void> {
  await mkdir(path, { recursive: true, mode });
  const me = process.geteuid?.() ?? 0;
  const trusted = (uid: number) => uid === 0 || uid === me;
  // A symlink is allowed (an admin may move a home elsewhere) when root or we made it.
  const l = await lstat(path);
  if (l.isSymbolicLink() && !trusted(l.uid)) throw foreign(path, what, l.uid, true);
  const fh = await open(path, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  try {
    const st = await fh.stat();
    if (!trusted(st.uid)) throw foreign(path, what, st.uid, false);
    if ((st.mode & 0o7777) !== mode) await fh.chmod(mode);
  } finally {
    await fh.close();
  }
}
