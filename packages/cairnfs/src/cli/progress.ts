// Progress of long operations, on stderr (stdout may carry a tar or a listing), with rate
// and time left. --progress picks the form: auto (a bar on a terminal, else plain), plain
// (one line per finished step), json (one JSON object per line, for scripts), none.
import cliProgress from 'cli-progress';
import type { ImportProgress, PullProgress, PushProgress } from '@cairnfs/image';
import type { MigrateProgress } from '../index.js';
import type { ProgressMode } from './context.js';
import { humanBytes, humanDuration, shortId } from './output.js';

/** Bytes per second and seconds left from the start of the operation (null until measurable). */
export class Rate {
  private readonly start = performance.now();
  measure(done: number, total: number): { perSecond: number | null; etaSeconds: number | null } {
    const seconds = (performance.now() - this.start) / 1000;
    if (seconds < 0.05 || done <= 0) return { perSecond: null, etaSeconds: null };
    const perSecond = done / seconds;
    return { perSecond, etaSeconds: total > done ? (total - done) / perSecond : 0 };
  }
}

type Display = 'bar' | 'plain' | 'json' | 'none';
const display = (mode: ProgressMode): Display => (mode === 'auto' ? (process.stderr.isTTY ? 'bar' : 'plain') : mode);
const line = (text: string) => process.stderr.write(`${text}\n`);
const json = (event: object) => process.stderr.write(`${JSON.stringify(event)}\n`);

export interface Reporter<P> { onProgress: (p: P) => void; stop: () => void }

/** Import progress: bytes are those read from the source (compressed, as stored there). */
export function importReporter(mode: ProgressMode): Reporter<ImportProgress> {
  const rate = new Rate();
  const how = display(mode);
  if (how === 'none') return { onProgress: () => undefined, stop: () => undefined };
  if (how === 'json') {
    return {
      onProgress: (p) => {
        const { perSecond, etaSeconds } = rate.measure(p.bytesDone, p.bytesTotal);
        json({ event: p.layer ? 'layer' : 'progress', image: p.image, ...(p.layer ? { layer: p.layer } : {}), layersDone: p.layersDone, layersTotal: p.layersTotal,
          bytesDone: p.bytesDone, bytesTotal: p.bytesTotal, bytesPerSecond: perSecond === null ? null : Math.round(perSecond),
          etaSeconds: etaSeconds === null ? null : Math.ceil(etaSeconds) });
      },
      stop: () => undefined,
    };
  }
  const speed = (p: ImportProgress) => {
    const { perSecond, etaSeconds } = rate.measure(p.bytesDone, p.bytesTotal);
    return perSecond === null ? { rate: '-', eta: '-' } : { rate: `${humanBytes(perSecond)}/s`, eta: humanDuration(etaSeconds ?? 0) };
  };
  if (how === 'plain') {
    return {
      onProgress: (p) => {
        if (!p.layer) return;
        const s = speed(p);
        line(`layer ${p.layer} applied (${p.layersDone}/${p.layersTotal}, ${humanBytes(p.bytesDone)}/${humanBytes(p.bytesTotal)}, ${s.rate}, ${s.eta} left)`);
      },
      stop: () => undefined,
    };
  }
  const bar = new cliProgress.SingleBar({
    stream: process.stderr,
    format: 'importing {image} [{bar}] {percentage}% | {layersDone}/{layersTotal} layers | {done}/{all} | {rate} | {eta} left',
  }, cliProgress.Presets.shades_classic);
  let started = '';
  return {
    onProgress: (p) => {
      const payload = { image: shortId(p.image), layersDone: p.layersDone, layersTotal: p.layersTotal, done: humanBytes(p.bytesDone), all: humanBytes(p.bytesTotal), ...speed(p) };
      if (started !== p.image) {
        if (started) bar.stop();
        bar.start(Math.max(p.bytesTotal, 1), p.bytesDone, payload);
        started = p.image;
      } else {
        bar.update(p.bytesDone, payload);
      }
    },
    stop: () => bar.stop(),
  };
}

/** Migration progress: one event per layer; the time left is estimated from layers done. */
export function migrateReporter(mode: ProgressMode): Reporter<MigrateProgress> {
  const rate = new Rate();
  let bytes = 0;
  const how = display(mode);
  return {
    onProgress: (p) => {
      bytes += p.bytes;
      const byLayers = rate.measure(p.index, p.total);
      const perSecond = rate.measure(bytes, bytes).perSecond;
      if (how === 'none') return;
      if (how === 'json') {
        json({ event: 'layer', index: p.index, total: p.total, id: p.id, outcome: p.outcome, bytes: p.bytes, digest: p.digest,
          bytesPerSecond: perSecond === null ? null : Math.round(perSecond), etaSeconds: byLayers.etaSeconds === null ? null : Math.ceil(byLayers.etaSeconds) });
        return;
      }
      line(`[${p.index}/${p.total}] ${p.id} ${p.outcome} (${humanBytes(p.bytes)}) ${p.digest.slice(0, 19)}` +
        (perSecond === null ? '' : ` ${humanBytes(perSecond)}/s, ${humanDuration(byLayers.etaSeconds ?? 0)} left`));
    },
    stop: () => undefined,
  };
}

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
          digest: shortId(l.digest), status: l.status.padEnd(11), done: humanBytes(l.bytesDone), size: humanBytes(l.bytesTotal),
          rate: l.status === 'downloading' ? `${humanBytes(l.bytesPerSecond)}/s` : '',
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
      if (l?.status === 'present') process.stderr.write(`layer ${shortId(l.digest)} already present\n`);
      if (l?.status === 'applied') process.stderr.write(`layer ${shortId(l.digest)} applied (${p.layersDone}/${p.layersTotal}, ${humanBytes(l.bytesDone)} at ${humanBytes(l.bytesPerSecond)}/s)\n`);
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
      const what = { exists: 'already in the registry', mounted: 'mounted from another repository', pushed: `pushed (${humanBytes(l.bytesDone)})` }[l.status];
      process.stderr.write(`layer ${l.index + 1}/${p.layersTotal} ${l.digest ? shortId(l.digest) : ''} ${what}\n`);
    },
    stop: () => undefined,
  };
}
