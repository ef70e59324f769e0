import { InjectQueue } from '@nestjs/bull';
import { Injectable } from '@nestjs/common';
import { HealthIndicatorService } from '@nestjs/terminus';
import type { Queue } from 'bull';
import { withTimeout } from '../common/with-timeout';
import { QueueName } from '../queues/queues';

/** Redis answers a PING on the queue's own connection within a second. */
@Injectable()
export class RedisHealthIndicator {
  constructor(
    @InjectQueue(QueueName.InstanceOperations) private readonly queue: Queue,
    private readonly health: HealthIndicatorService,
  ) {}

  async isHealthy(key: string) {
    const indicator = this.health.check(key);
    if (this.queue.client.status !== 'ready') {
      return indicator.down({ message: `Redis connection is ${this.queue.client.status}` });
    }
    try {
      await withTimeout(this.queue.client.ping(), 1000, 'Redis PING');
      return indicator.up();
    } catch (error) {
      return indicator.down({ message: (error as Error).message });
    }
  }
}
