import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { Test, TestingModuleBuilder } from '@nestjs/testing';
import Redis from 'ioredis';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import request from 'supertest';
import type TestAgent from 'supertest/lib/agent';

/**
 * Boots the real AppModule against real Redis and a real database, each test file with its own
 * queue prefix and its own database: a SQLite file by default, or a fresh PostgreSQL database
 * when TEST_DATABASE_URL points at a server (`postgres://postgres@127.0.0.1:5432/test`).
 */
export interface TestApp {
  app: NestFastifyApplication;
  http: TestAgent;
  /** The `ADMIN_TOKEN` staff user's token. */
  adminToken: string;
  env: Record<string, string>;
  close(): Promise<void>;
}

export const TEST_REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

export async function startApp(
  overrides: Record<string, string> = {},
  /** Replaces providers of the real app: parts a test must hold still, never the queue or database. */
  customize: (builder: TestingModuleBuilder) => TestingModuleBuilder = (builder) => builder,
): Promise<TestApp> {
  const id = randomBytes(5).toString('hex');
  // A second process of the same deployment shares the first one's database and queue prefix.
  const database = overrides.DATABASE_URL
    ? { url: overrides.DATABASE_URL, drop: async () => undefined }
    : await createDatabase(id);
  const adminToken = `admin-${randomBytes(16).toString('hex')}`;
  const env: Record<string, string> = {
    DATABASE_URL: database.url,
    REDIS_URL: TEST_REDIS_URL,
    QUEUE_PREFIX: `provisor-test-${id}`,
    ADMIN_TOKEN: adminToken,
    APP_ROLE: 'all',
    SIM_LATENCY_MS: '10',
    JOB_TIMEOUT_MS: '5000',
    JOB_ATTEMPTS: '3',
    JOB_BACKOFF_MS: '20',
    RELAY_INTERVAL_MS: '100',
    WORKER_CONCURRENCY: '10',
    LOG_LEVEL: 'error',
    ...overrides,
  };
  Object.assign(process.env, env);

  // Imported after the environment is set: ConfigModule reads it when AppModule loads.
  const { AppModule } = await import('../../src/app.module');
  const { configureApp, createHttpAdapter } = await import('../../src/app.setup');
  const moduleRef = await customize(Test.createTestingModule({ imports: [AppModule] })).compile();
  const app = moduleRef.createNestApplication<NestFastifyApplication>(createHttpAdapter(), {
    bodyParser: false,
    logger: ['error', 'warn'],
  });
  configureApp(app);
  await app.init();
  await app.getHttpAdapter().getInstance().ready();

  return {
    app,
    http: request(app.getHttpServer()),
    adminToken,
    env,
    async close() {
      await app.close();
      if (!overrides.QUEUE_PREFIX) await clearQueue(env.REDIS_URL, env.QUEUE_PREFIX);
      await database.drop();
    },
  };
}

export async function createDatabase(id: string): Promise<{ url: string; drop(): Promise<void> }> {
  const server = process.env.TEST_DATABASE_URL;
  if (server?.startsWith('postgres')) {
    const name = `provisor_test_${id}`;
    const admin = new Client({ connectionString: server });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${name}`);
    await admin.end();
    const url = new URL(server);
    url.pathname = `/${name}`;
    return {
      url: url.toString(),
      async drop() {
        const client = new Client({ connectionString: server });
        await client.connect();
        await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
        await client.end();
      },
    };
  }
  const dir = mkdtempSync(join(tmpdir(), 'provisor-test-'));
  return {
    url: `sqlite:${join(dir, 'provisor.sqlite')}`,
    async drop() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function clearQueue(redisUrl: string, prefix: string): Promise<void> {
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1, lazyConnect: true });
  try {
    await redis.connect();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      if (keys.length) await redis.del(...keys);
      cursor = next;
    } while (cursor !== '0');
  } catch {
    // Redis may be the thing a test stopped; nothing to clear then.
  } finally {
    redis.disconnect();
  }
}
