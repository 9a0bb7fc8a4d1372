/**
 * A layer store in another process, for store-multiproc.test.ts: opens a driver and a
 * LayerStore on a root and serves requests from stdin (one JSON per line, run as they
 * come), answering `{"id":n,"ok":…}` or `{"id":n,"err":{code,message}}` on stdout.
 */
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { LayerStore } from '@cairnfs/image';
import { say } from '@cairnfs/testkit';

const [root, name] = process.argv.slice(2) as [string, string];
const { [`${name}Driver`]: factory } = (await import(`@cairnfs/${name}`)) as Record<string, { open: (ctx: object) => Promise<import('@cairnfs/core').StorageDriver> }>;
const driver = await factory!.open({ root, home: join(root, name), options: {}, lockTimeoutMs: 20_000 });
const store = await LayerStore.open(driver, { lockTimeoutMs: 20_000 });

interface Request { id: number; op: string; args: string[] }

async function handle(req: Request): Promise<unknown> {
  const [a, b] = req.args;
  switch (req.op) {
    case 'import': return (await store.importImage(a!, b ? { tag: b } : {})).map((i) => i.id);
    case 'tag': return store.tag(a!, b!);
    case 'create': return (await store.createContainer(a!, b!)).mountId;
    case 'rm': return store.removeContainer(a!);
    case 'rmi': return store.removeImage(a!);
    case 'gc': return store.gc();
    case 'exit':
      await driver.cleanup();
      setImmediate(() => process.exit(0));
      return null;
    default: throw new Error(`unknown op ${req.op}`);
  }
}

say('ready');
for await (const line of createInterface({ input: process.stdin })) {
  const req = JSON.parse(line) as Request;
  handle(req).then(
    (ok) => say({ id: req.id, ok: ok ?? null }),
    (err: unknown) => say({ id: req.id, err: { code: (err as { code?: string }).code ?? null, message: String((err as Error).message) } }),
  );
}
