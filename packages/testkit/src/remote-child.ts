/**
 * A driver in another process, for the multi-process tests (see remote.ts): it opens a
 * driver on a root and serves requests from stdin, one JSON per line, answering each on
 * stdout (`{"id":n,"ok":…}` or `{"id":n,"err":{code,message}}`). Requests run as they
 * come (a slow one does not hold up the next), so the parent can kill us mid-operation.
 * Besides driver calls it runs two loops of its own: `witness` (steady work on its own
 * layers while another process is being killed around it) and `stress` (random
 * operations for a while).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import type { StorageDriver } from '@cairnfs/core';
import { layerTar } from './crash.js';
import { loadDriverFactory, say } from './crash-protocol.js';
import { runStress, runWitness, type StressOptions, type WitnessOptions, type WorkReport } from './remote-work.js';

interface Request {
  id: number;
  op: 'open' | 'call' | 'apply' | 'witness' | 'stop' | 'stress' | 'read' | 'exit';
  [key: string]: unknown;
}

let driver: StorageDriver | null = null;
let witness: { stop: () => Promise<WorkReport> } | null = null;

async function handle(req: Request): Promise<unknown> {
  switch (req.op) {
    case 'open': {
      const factory = await loadDriverFactory(req.driver as string);
      driver = await factory.open({
        root: req.root as string, home: join(req.root as string, factory.name),
        options: (req.options as Record<string, string>) ?? {}, lockTimeoutMs: req.lockTimeoutMs as number,
      });
      return process.pid;
    }
    case 'call': {
      const method = (driver as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[req.method as string];
      if (typeof method !== 'function') throw new Error(`no driver method ${String(req.method)}`);
      const value = await method.apply(driver, req.args as unknown[]);
      return value instanceof Readable ? null : value;
    }
    case 'apply': {
      const tar = layerTar(req.layer as string, req.seed as number, req.bytes as number, req.whiteout as boolean);
      const pace = (req.paceMs as number | undefined) ?? 0;
      return driver!.applyDiff(req.layer as string, undefined, pace > 0 ? Readable.from(paced(tar, pace)) : Readable.from([tar]));
    }
    case 'read': {
      const root = await driver!.get(req.layer as string);
      try {
        return await readFile(join(root, req.path as string), 'utf8');
      } finally {
        await driver!.put(req.layer as string);
      }
    }
    case 'witness':
      witness = runWitness(driver!, req as unknown as WitnessOptions);
      return null;
    case 'stop': {
      const report = await witness!.stop();
      witness = null;
      return report;
    }
    case 'stress':
      return runStress(driver!, req as unknown as StressOptions);
    case 'exit':
      await driver?.cleanup();
      setImmediate(() => process.exit(0));
      return null;
  }
}

say('loaded');
for await (const line of createInterface({ input: process.stdin })) {
  const req = JSON.parse(line) as Request;
  say({ id: req.id, begun: true });
  handle(req).then(
    (ok) => say({ id: req.id, ok: ok ?? null }),
    (err: unknown) => say({ id: req.id, err: { code: (err as { code?: string }).code ?? null, message: String((err as Error).message ?? err) } }),
  );
}

/** `tar` in 1 MiB pieces with `ms` between them. */
async function* paced(tar: Buffer, ms: number): AsyncGenerator<Buffer> {
  for (let at = 0; at < tar.length; at += 1 << 20) {
    if (at > 0) await new Promise((r) => setTimeout(r, ms));
    yield tar.subarray(at, at + (1 << 20));
  }
}
