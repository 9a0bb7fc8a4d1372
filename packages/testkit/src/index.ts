export * from './backends.js';
export * from './loopfs.js';
export * from './tree.js';
export * from './conformance.js';
export * from './dockerd.js';
export * from './crash.js';
export * from './zfs.js';
export * from './fuzz.js';
