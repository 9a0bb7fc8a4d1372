export * from './errors.js';
export * from './ids.js';
export type * from './driver.js';
