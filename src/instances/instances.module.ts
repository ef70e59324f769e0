import { Module } from '@nestjs/common';
import { IdempotencyModule } from '../idempotency/idempotency.module';
import { StateMachineModule } from '../state-machine/state-machine.module';
import { CatalogController } from './catalog.controller';
import { InstanceQueries } from './instance-queries.service';
import { InstancesController } from './instances.controller';

@Module({
  imports: [StateMachineModule, IdempotencyModule],
  controllers: [InstancesController, CatalogController],
  providers: [InstanceQueries],
})
export class InstancesModule {}
