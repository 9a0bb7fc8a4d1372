// allocPopulated maps a fresh buffer's pages up front (MADV_POPULATE_WRITE), so a read()
// into it takes no page fault per 4 KiB: the memory is resident before anything is written.
// Counted in page faults, not RSS: an allocator may hand out memory that was resident
// already (ASan's does, from its quarantine), which hides a populate in the RSS figure but
// not in the faults that writing the buffer takes.
import { readFileSync } from 'node:fs';
import { allocPopulated } from '../src/index.js';
import { native } from '../src/native.js';

/**
 * Minor faults of this thread only (/proc/thread-self/stat, field 10): the process-wide
 * count also takes V8's GC threads touching fresh heap meanwhile (~7,000 faults during one
 * 64 MiB fill in CI's sanitizer step, where the worker had run many suites before).
 */
const minorFaults = (): number => {
  const stat = readFileSync('/proc/thread-self/stat', 'latin1');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[7]);
};

/** Resident set of the process in KiB (/proc/self/status VmRSS). */
const residentKiB = (): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'latin1'))?.[1]);

test('a populated 64 MiB buffer is resident at once: the populate succeeds, and writing all of it takes (almost) no page fault', () => {
  const size = 64 << 20;
  const pages = size / 4096;
  const rssBefore = residentKiB();
  const buffer = Buffer.allocUnsafe(size);
  const errno = native.populateSync(buffer);
  const rssGrowthMiB = (residentKiB() - rssBefore) >> 10;
  const before = minorFaults();
  buffer.fill(1); // usable as any Buffer
  const faults = minorFaults() - before;
  expect(buffer[size - 1]).toBe(1);
  // What the kernel said and what it did, in the failure message: a nonzero errno is the
  // populate refused; errno 0 with a fault per page is populated pages lost again.
  // (RSS is context only: ASan's allocator may hand out memory resident already.)
  expect({ errno, faults: faults < pages / 4 ? 'few' : `${faults}, the populate grew RSS by ${rssGrowthMiB} MiB` })
    .toEqual({ errno: 0, faults: 'few' });
});

test('allocPopulated hands out a populated buffer of the size asked for: filling it takes (almost) no page fault', () => {
  const size = 64 << 20;
  const populated = allocPopulated(size);
  expect(populated.length).toBe(size);
  const before = minorFaults();
  populated.fill(1);
  // Unpopulated, that fill takes one fault per page (16,384); a sanitizer's shadow memory
  // adds at most one per eight pages.
  expect(minorFaults() - before).toBeLessThan(size / 4096 / 4);
});

test('the same fill of a plain allocUnsafe buffer of fresh memory faults page by page (what populating saves)', () => {
  const size = 256 << 20; // past what an allocator keeps resident for reuse
  const plain = Buffer.allocUnsafe(size);
  const before = minorFaults();
  plain.fill(1);
  const faults = minorFaults() - before;
  expect(faults).toBeGreaterThan((size / 4096) / 2);
});

test('small buffers are plain allocations of the size asked for', () => {
  expect(allocPopulated(0).length).toBe(0);
  expect(allocPopulated(100).length).toBe(100);
});
