import { Module } from '@nestjs/common';
import { MetricsModule } from '../metrics/metrics.module';
import { QueuesModule } from '../queues/queues.module';
import { StateMachineModule } from '../state-machine/state-machine.module';
import { EventStreamHub } from './event-stream.service';
import { EventsController } from './events.controller';
import { EventsService } from './events.service';

@Module({
  imports: [StateMachineModule, QueuesModule, MetricsModule],
  controllers: [EventsController],
  providers: [EventsService, EventStreamHub],
})
export class EventsModule {}
