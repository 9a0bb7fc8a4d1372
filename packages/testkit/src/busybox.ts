import { closeSync, openSync, readSync } from 'node:fs';

/** The statically linked busybox of Debian's busybox-static: a whole userland in one file. */
export const BUSYBOX = '/bin/busybox';

/**
 * Null when {@link BUSYBOX} is a static executable (one that runs inside a container root
 * holding nothing else), else why not, for describeBackend. Debian's dynamically linked
 * `busybox` package installs the same path, and a copy of it would fail in the container
 * for want of its libraries: an ELF with a PT_INTERP program header is dynamic.
 */
export function busyboxMissing(): string | null {
  let fd: number;
  try {
    fd = openSync(BUSYBOX, 'r');
  } catch {
    return `${BUSYBOX} not found: run scripts/install-deps.sh (apt package busybox-static)`;
  }
  try {
    const head = Buffer.alloc(4096);
    const n = readSync(fd, head, 0, head.length, 0);
    // 64-bit little-endian ELF: e_phoff at 32, e_phentsize at 54, e_phnum at 56.
    if (n < 64 || head.readUInt32BE(0) !== 0x7f454c46 || head[4] !== 2 || head[5] !== 1) {
      return `${BUSYBOX} is not a 64-bit ELF executable: install busybox-static (scripts/install-deps.sh)`;
    }
    const phoff = Number(head.readBigUInt64LE(32));
    const phentsize = head.readUInt16LE(54);
    const phnum = head.readUInt16LE(56);
    for (let i = 0; i < phnum; i++) {
      const at = phoff + i * phentsize;
      if (at + 4 > n) break;
      if (head.readUInt32LE(at) === 3 /* PT_INTERP */) {
        return `${BUSYBOX} is dynamically linked (Debian's busybox package): install busybox-static (scripts/install-deps.sh)`;
      }
    }
    return null;
  } finally {
    closeSync(fd);
  }
}
