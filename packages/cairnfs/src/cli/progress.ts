import cliProgress from 'cli-progress';
import type { ImportProgress, PullProgress, PushProgress } from '@cairnfs/image';

/**
 * Import progress on stderr (stdout may carry a tar): a bar when stderr is a terminal,
 * one plain line per finished layer otherwise, so logs stay readable.
 */
export function importReporter(): { onProgress: (p: ImportProgress) => void; stop: () => void } {
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar({
      stream: process.stderr,
      format: 'importing {image} [{bar}] {percentage}% | {layersDone}/{layersTotal} layers | {value}/{total} bytes',
    }, cliProgress.Presets.shades_classic);
    let started = '';
    return {
      onProgress: (p) => {
        const payload = { image: p.image.slice(7, 19), layersDone: p.layersDone, layersTotal: p.layersTotal };
        if (started !== p.image) { if (started) bar.stop(); bar.start(Math.max(p.bytesTotal, 1), p.bytesDone, payload); started = p.image; }
        else bar.update(p.bytesDone, payload);
      },
      stop: () => bar.stop(),
    };
  }
  return {
    onProgress: (p) => {
      if (p.layer) process.stderr.write(`layer ${p.layer} applied (${p.layersDone}/${p.layersTotal}, ${p.bytesDone}/${p.bytesTotal} bytes)\n`);
    },
    stop: () => undefined,
  };
}

const mb = (n: number) => (n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} kB` : `${n} B`);
const shortDigest = (d: string) => d.slice(7, 19);

/**
 * Pull progress on stderr: one bar per layer (bytes and rate) on a terminal; otherwise a
 * line per layer when it is found present or applied.
 */
export function pullReporter(): { onProgress: (p: PullProgress) => void; stop: () => void } {
  if (process.stderr.isTTY) {
    const bars = new cliProgress.MultiBar({
      stream: process.stderr, hideCursor: true, clearOnComplete: false,
      format: '{digest} {status} [{bar}] {done}/{size} {rate}',
    }, cliProgress.Presets.shades_classic);
    const byLayer = new Map<number, cliProgress.SingleBar>();
    return {
      onProgress: (p) => {
        const l = p.layer;
        if (!l) return;
        const payload = {
          digest: shortDigest(l.digest), status: l.status.padEnd(11), done: mb(l.bytesDone), size: mb(l.bytesTotal),
          rate: l.status === 'downloading' ? `${mb(l.bytesPerSecond)}/s` : '',
        };
        let bar = byLayer.get(l.index);
        if (!bar) { bar = bars.create(Math.max(l.bytesTotal, 1), 0, payload); byLayer.set(l.index, bar); }
        bar.update(l.status === 'present' || l.status === 'applied' ? Math.max(l.bytesTotal, 1) : l.bytesDone, payload);
      },
      stop: () => bars.stop(),
    };
  }
  return {
    onProgress: (p) => {
      const l = p.layer;
      if (l?.status === 'present') process.stderr.write(`layer ${shortDigest(l.digest)} already present\n`);
      if (l?.status === 'applied') process.stderr.write(`layer ${shortDigest(l.digest)} applied (${p.layersDone}/${p.layersTotal}, ${mb(l.bytesDone)} at ${mb(l.bytesPerSecond)}/s)\n`);
    },
    stop: () => undefined,
  };
}

/** Push progress on stderr: a line per layer as it is found, mounted or pushed. */
export function pushReporter(): { onProgress: (p: PushProgress) => void; stop: () => void } {
  return {
    onProgress: (p) => {
      const l = p.layer;
      if (!l || l.status === 'checking' || l.status === 'uploading') return;
      const what = { exists: 'already in the registry', mounted: 'mounted from another repository', pushed: `pushed (${mb(l.bytesDone)})` }[l.status];
      process.stderr.write(`layer ${l.index + 1}/${p.layersTotal} ${l.digest ? shortDigest(l.digest) : ''} ${what}\n`);
    },
    stop: () => undefined,
  };
}
