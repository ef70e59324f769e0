import Redis from 'ioredis';

/** Undone in reverse order, once, whether the run ends well, badly or by Ctrl-C. */
export class Cleanup {
  private readonly steps: { name: string; undo: () => Promise<unknown> }[] = [];
  private ran?: Promise<void>;

  add(name: string, undo: () => Promise<unknown>): void {
    this.steps.push({ name, undo });
  }

  run(): Promise<void> {
    this.ran ??= (async () => {
      for (const step of this.steps.reverse()) {
        try {
          await step.undo();
        } catch (error) {
          console.error(`Cleanup (${step.name}) failed: ${(error as Error).message}`);
        }
      }
    })();
    return this.ran;
  }
}

/** Bull's keys of one queue prefix, and nothing else of the Redis they share. */
export async function deleteRedisKeys(redisUrl: string, prefix: string): Promise<void> {
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 2 });
  try {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await redis.del(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}
