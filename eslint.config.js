// Lint for the whole monorepo (`npm run lint`, run by .ci/run): typescript-eslint's
// recommended rules on every package's sources, tests, scripts and examples. Type-aware
// rules are left out on purpose: they need a full program per file set and would add
// minutes to CI for little the strict compiler does not already catch.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', 'docs/api/**', 'packages/sys/build/**', 'packages/sys/prebuilds/**', 'bench/.tmp/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      ecmaVersion: 2023,
      sourceType: 'module',
      globals: {
        process: 'readonly', console: 'readonly', Buffer: 'readonly', URL: 'readonly', setTimeout: 'readonly',
        clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', setImmediate: 'readonly',
        AbortController: 'readonly', AbortSignal: 'readonly', TextEncoder: 'readonly', TextDecoder: 'readonly',
        fetch: 'readonly', queueMicrotask: 'readonly', structuredClone: 'readonly', performance: 'readonly',
        Response: 'readonly', Request: 'readonly', Headers: 'readonly', __dirname: 'readonly', require: 'readonly',
        module: 'writable',
      },
    },
    rules: {
      // Unused names are the compiler's job (noUnusedLocals); `_`-prefixed ones are deliberate.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none', destructuredArrayIgnorePattern: '^_' }],
      // Empty catch blocks that say why (a comment) are a documented choice here.
      'no-empty': ['error', { allowEmptyCatch: true }],
      '@typescript-eslint/no-non-null-assertion': 'off',
    },
  },
  {
    files: ['**/test/**', 'packages/testkit/**'],
    languageOptions: { globals: { describe: 'readonly', test: 'readonly', it: 'readonly', expect: 'readonly', beforeAll: 'readonly', afterAll: 'readonly', beforeEach: 'readonly', afterEach: 'readonly', jest: 'readonly' } },
  },
);
