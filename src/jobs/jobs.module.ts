import { Module } from '@nestjs/common';
import { BackendModule } from '../backend/backend.module';
import { StateMachineModule } from '../state-machine/state-machine.module';
import { InstanceOperationsProcessor } from './instance-operations.processor';
import { JobDispatcher } from './job-dispatcher';
import { OutboxRelay } from './outbox-relay.service';
import { QueuesModule } from '../queues/queues.module';
import { StuckSweeper } from './stuck-sweeper.service';

@Module({
  imports: [QueuesModule, StateMachineModule, BackendModule],
  providers: [JobDispatcher, OutboxRelay, InstanceOperationsProcessor, StuckSweeper],
})
export class JobsModule {}
