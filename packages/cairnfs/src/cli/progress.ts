import cliProgress from 'cli-progress';
import type { ImportProgress } from '@cairnfs/image';

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
