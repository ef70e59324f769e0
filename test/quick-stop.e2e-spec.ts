import Redis from 'ioredis';
import { startApp, TEST_REDIS_URL } from './support/test-app';

/**
 * A process stopped just after it started (a deploy rolled back at once, a crash loop) must stop
 * as cleanly as any other. The worker's Redis connections are still being set up then: a command
 * of Bull's that the stop cuts off must not end as an unhandled rejection (which crashes the
 * process on its way out), and no connection may open after the stop (which keeps the process
 * from exiting).
 */
describe('stopping a process as soon as it has started', () => {
  const unhandled: unknown[] = [];
  const record = (reason: unknown) => unhandled.push(reason);
  let redis: Redis;
  beforeAll(() => {
    process.on('unhandledRejection', record);
    redis = new Redis(TEST_REDIS_URL);
  });
  afterAll(() => {
    process.off('unhandledRejection', record);
    redis.disconnect();
  });

  /** Connections Bull opened for this app: they are named after its queue prefix. */
  const openConnections = async (prefix: string): Promise<string[]> => {
    const list = (await redis.call('CLIENT', 'LIST')) as string;
    return list.split('\n').filter((line) => line.includes(` name=${prefix}:`));
  };

  it('closes without an unhandled rejection or a connection left open, time after time', async () => {
    // The first starts in a file are the slowest, so the widest window: runs of the worker as
    // it was failed within the first three.
    const prefixes: string[] = [];
    for (let i = 0; i < 20; i++) {
      const t = await startApp();
      await t.close();
      prefixes.push(t.env.QUEUE_PREFIX);
    }
    // A rejection is reported on the turn after it happens; a late connection takes a moment.
    await new Promise((r) => setTimeout(r, 500));
    expect(unhandled).toEqual([]);
    for (const prefix of prefixes) expect(await openConnections(prefix)).toEqual([]);
  });
});
