// Peak RSS while applying a large layer, measured in a child so the bench's own inputs
// and results do not count: VmHWM from /proc/self/status after the apply.
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { rmrf } from '../env.mjs';

export function rssCase({ base, gib, archiveDist, native }) {
  const target = `${base}/rss-target`;
  mkdirSync(target, { recursive: true });
  try {
    const child = fileURLToPath(new URL('./rss-child.mjs', import.meta.url));
    const env = { ...process.env, CAIRN_PURE_JS: native ? '' : '1' };
    const out = execFileSync(process.execPath, [child, archiveDist, target, String(gib)], { encoding: 'utf8', env });
    const r = JSON.parse(out);
    return { name: `peak RSS applying a ${gib} GiB layer (${native ? 'native' : 'pure JS'})`, ...r };
  } finally {
    rmrf(target);
  }
}
