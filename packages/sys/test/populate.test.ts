// allocPopulated maps a fresh buffer's pages up front (MADV_POPULATE_WRITE), so a read()
// into it takes no page fault per 4 KiB: the memory is resident before anything is written.
import { allocPopulated } from '../src/index.js';

const rssMiB = () => process.memoryUsage().rss / (1 << 20);

test('a populated 64 MiB buffer is resident at once; a plain allocUnsafe one is not', () => {
  const size = 64 << 20;
  const before = rssMiB();
  const plain = Buffer.allocUnsafe(size); // mmap'ed by malloc, untouched: not resident
  const afterPlain = rssMiB();
  const populated = allocPopulated(size);
  const afterPopulated = rssMiB();
  expect(populated.length).toBe(size);
  expect(afterPlain - before).toBeLessThan(16);
  expect(afterPopulated - afterPlain).toBeGreaterThan(60);
  populated.fill(1); // usable as any Buffer
  expect(populated[size - 1]).toBe(1);
  expect(plain.length).toBe(size);
});

test('small buffers are plain allocations of the size asked for', () => {
  expect(allocPopulated(0).length).toBe(0);
  expect(allocPopulated(100).length).toBe(100);
});
