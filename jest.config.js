// ESM all the way down: p-limit and other dependencies are ESM-only, so jest runs
// with --experimental-vm-modules and @swc/jest transpiles TypeScript (no type check
// at test time; `npm run typecheck` does that). Workspace packages resolve to their
// sources, so tests need no build step.
/** @type {import('jest').Config} */
export default {
  testEnvironment: 'node',
  extensionsToTreatAsEsm: ['.ts'],
  transform: {
    '^.+\\.ts$': ['@swc/jest', {
      jsc: { parser: { syntax: 'typescript' }, target: 'es2022' },
      module: { type: 'es6' },
    }],
  },
  moduleNameMapper: {
    '^@cairnfs/([a-z0-9-]+)$': '<rootDir>/packages/$1/src/index.ts',
    '^cairnfs$': '<rootDir>/packages/cairnfs/src/index.ts',
    '^(\\.{1,2}/.*)\\.js$': '$1',
  },
  testMatch: ['<rootDir>/packages/*/test/**/*.test.ts'],
  testTimeout: 120000,
  reporters: ['default', '<rootDir>/scripts/backend-reporter.js'],
};
