import { BullModule } from '@nestjs/bull';
import { Module } from '@nestjs/common';
import { QueueName } from './queues';

/**
 * The Bull queues, one connection set each, shared by whoever needs a handle: the jobs module
 * (producer and consumer), health checks and the dashboard.
 */
@Module({
  imports: [BullModule.registerQueue({ name: QueueName.InstanceOperations })],
  exports: [BullModule],
})
export class QueuesModule {}
