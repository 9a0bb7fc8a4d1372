export * from './backends.js';
export * from './loopfs.js';
