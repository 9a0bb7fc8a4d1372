// TypeScript in CommonJS (a .cts file compiles to require()): TypeScript >= 5.8 with
// module nodenext types require() of an ES module the way Node >= 20.19 runs it.
import { probe, type ProbeResult } from 'cairnfs';

export async function list(): Promise<string[]> {
  const results: ProbeResult[] = await probe({ root: '/var/lib/cairn' });
  return results.map((r) => r.name);
}
