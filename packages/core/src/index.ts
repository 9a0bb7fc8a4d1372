export * from './errors.js';
export * from './ids.js';
export type * from './driver.js';
export * from './mutex.js';
export * from './refcount.js';
export * from './staging.js';
export * from './mountinfo.js';
export * from './backingfs.js';
