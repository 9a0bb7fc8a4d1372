// Export: cairn packing a tree as a layer tar vs GNU `tar --format=pax -cf` of the same
// tree, both written to a file on the same filesystem. Like with like: GNU tar's pax
// format writes a PAX header with mtime/atime/ctime for every entry, as cairn writes
// one for each nanosecond mtime. (Writing to /dev/null would let GNU tar skip reading
// file content altogether, so both sides write a real file.)
import { closeSync, openSync, writeSync } from 'node:fs';
import { PerformanceObserver, constants, performance } from 'node:perf_hooks';
import { comparePair } from '../harness.mjs';
import { rmrf, runReference } from '../env.mjs';

/**
 * Writes the stream to a file with plain writeSync calls, as tar writes its output. (A
 * createWriteStream pipeline measured ~100 ms more per 50 MB on this machine, spent in
 * Node's async write path, which is the consumer's cost, not export's.)
 */
export async function writeTo(stream, file) {
  const fd = openSync(file, 'w');
  try {
    for await (const chunk of stream) {
      for (let off = 0; off < chunk.length;) off += writeSync(fd, chunk, off);
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * Counts V8 mark-compacts (major GCs) that start while cairn's side of a case runs. Each
 * export hands its consumer ~1 fresh ArrayBuffer per 256 KiB, which V8 counts as external
 * memory; whether it frees them by cheap scavenges or by mark-compacts (one per ~64 MiB in
 * some processes and on Node 24) decides a good part of export's CPU at full size, and
 * unlike the CPU ratio that count does not depend on the machine's load
 * (docs/benchmarks.md, "Issue 19: export chunk memory").
 */
function majorGcCounter() {
  const starts = [];
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) starts.push(e.startTime);
  });
  observer.observe({ entryTypes: ['gc'] });
  const spans = [];
  return {
    /** `fn` with its run's time span recorded. */
    timed: (fn) => async (ctx) => {
      const t0 = performance.now();
      try {
        return await fn(ctx);
      } finally {
        spans.push([t0, performance.now()]);
      }
    },
    /** Adds `cairnMajorGcs` (mark-compacts inside the recorded spans) and `cairnRuns` to a result. */
    async annotate(result) {
      await new Promise((resolve) => setTimeout(resolve, 20)); // GC entries are delivered on a later tick
      result.cairnMajorGcs = starts.filter((t) => spans.some(([a, b]) => t >= a && t <= b)).length;
      result.cairnRuns = spans.length;
      starts.length = 0;
      spans.length = 0;
      return result;
    },
    stop: () => observer.disconnect(),
  };
}

export async function exportCases({ input, base, label, pairs, archive, cairn }) {
  const results = [];
  const gcs = majorGcCounter();
  // The change list of a base layer: every path is an addition.
  const changes = await archive.changesBetween(input.dir, null);
  const { mkdirSync } = await import('node:fs');
  mkdirSync(base, { recursive: true });
  const out = (side, i) => {
    const file = `${base}/export-${side}-${i}.tar`;
    return { file, teardown: () => rmrf(file) };
  };
  results.push(await gcs.annotate(await comparePair({
    name: `export ${label}: exportChanges`, pairs, referenceName: 'tar -cf (pax)',
    setup: out,
    cairn: gcs.timed((ctx) => writeTo(archive.exportChanges(input.dir, changes), ctx.file)),
    reference: (ctx) => runReference('tar', ['--format=pax', '-C', input.dir, '-cf', ctx.file, '.']),
  })));

  // Like with like for xattrs: cairn must read every entry's xattrs (llistxattr per
  // entry); GNU tar reads none unless told to with --xattrs.
  results.push(await gcs.annotate(await comparePair({
    name: `export ${label}: exportChanges`, pairs, referenceName: 'tar -cf (pax, --xattrs)',
    setup: out,
    cairn: gcs.timed((ctx) => writeTo(archive.exportChanges(input.dir, changes), ctx.file)),
    reference: (ctx) => runReference('tar', ['--format=pax', '--xattrs', '-C', input.dir, '-cf', ctx.file, '.']),
  })));

  // cairn's own writer (the CLI's `diff`/`export -o`): writeExportTo packs into two reused
  // buffers, so V8 has no fresh chunk buffers to collect.
  results.push(await gcs.annotate(await comparePair({
    name: `export ${label}: exportChanges → writeExportTo`, pairs, referenceName: 'tar -cf (pax)',
    setup: out,
    cairn: gcs.timed(async (ctx) => {
      const fd = openSync(ctx.file, 'w');
      try {
        await archive.writeExportTo(archive.exportChanges(input.dir, changes), fd);
      } finally {
        closeSync(fd);
      }
    }),
    reference: (ctx) => runReference('tar', ['--format=pax', '-C', input.dir, '-cf', ctx.file, '.']),
  })));

  // Through the vfs driver: diff() of a base layer walks it and packs it.
  const driver = await cairn.openDriver({ root: `${base}/root-export-vfs`, driver: 'vfs' });
  const { createReadStream } = await import('node:fs');
  await driver.create('exported', null);
  await driver.applyDiff('exported', null, createReadStream(input.tar));
  const layerDir = (await driver.get('exported'));
  results.push(await gcs.annotate(await comparePair({
    name: `export ${label}: vfs diff`, pairs, referenceName: 'tar -cf (pax)',
    setup: out,
    cairn: gcs.timed(async (ctx) => writeTo(await driver.diff('exported', null), ctx.file)),
    reference: (ctx) => runReference('tar', ['--format=pax', '-C', layerDir, '-cf', ctx.file, '.']),
  })));
  gcs.stop();
  await driver.put('exported');
  await driver.remove('exported');
  await driver.cleanup();
  return results;
}
