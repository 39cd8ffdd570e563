// ESLint flat config: typescript-eslint strict type-checked rules on src/, test/, bench/.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/**
 * Layers (docs/architecture.md, "Layers"): imports point down only. native/errors/paths, ring
 * and protocol are the bottom; transport and ivshmem sit on them; client and daemon are
 * siblings that never import each other; cli is on top. A relative import that climbs into
 * a layer above is an error, so the next change cannot quietly break the direction.
 */
const above = {
  ring: ['transport', 'ivshmem', 'client', 'daemon', 'cli'],
  protocol: ['transport', 'ivshmem', 'client', 'daemon', 'cli'],
  transport: ['ivshmem', 'client', 'daemon', 'cli'],
  ivshmem: ['transport', 'client', 'daemon', 'cli'],
  client: ['ivshmem', 'daemon', 'cli'],
  daemon: ['client', 'cli'],
};
const layerRules = Object.entries(above).map(([layer, forbidden]) => ({
  files: [`src/${layer}/**/*.ts`],
  rules: {
    'no-restricted-imports': [
      'error',
      {
        patterns: forbidden.map((f) => ({
          group: [`**/${f}/*`, `**/${f}/**`],
          message: `src/${layer} must not import from src/${f} (docs/architecture.md, "Layers").`,
        })),
      },
    ],
  },
}));

export default tseslint.config(
  { ignores: ['dist/**', 'native/build/**', 'clib/**', 'node_modules/**', '.tmp/**', 'eslint.config.js', 'scripts/**', '**/*.mjs'] },
  js.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true }],
      '@typescript-eslint/no-unnecessary-condition': 'off',
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'it', 'describe', 'suite'] }] },
      ],
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/prefer-literal-enum-member': 'off',
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  {
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-confusing-void-expression': 'off',
    },
  },
  ...layerRules,
);
