// Times in tests and in the app are UTC, whatever the machine says.
process.env.TZ = 'UTC';

// Type checking is `npm run typecheck`'s job; tests transpile file by file, which is fast.
const transform = {
  '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.jest.json', diagnostics: false }],
};
// An ES module under @fastify/static (which Swagger UI and the queue dashboard serve their files
// with): Node 20 loads it with require(), Jest's module loader cannot.
const moduleNameMapper = { '^content-disposition$': '<rootDir>/test/support/content-disposition.js' };

/** @type {import('jest').Config} */
module.exports = {
  projects: [
    {
      displayName: 'unit',
      testEnvironment: 'node',
      testMatch: ['<rootDir>/src/**/*.spec.ts', '<rootDir>/bench/**/*.spec.ts'],
      transform,
      moduleNameMapper,
    },
    {
      displayName: 'e2e',
      testEnvironment: 'node',
      testMatch: ['<rootDir>/test/**/*.e2e-spec.ts'],
      transform,
      moduleNameMapper,
      slowTestThreshold: 30,
    },
  ],
  maxWorkers: 2,
  testTimeout: 60_000,
};
