import { Module } from '@nestjs/common';
import { QueuesModule } from '../queues/queues.module';
import { StateMachineModule } from '../state-machine/state-machine.module';
import { HttpMetricsHook } from './http-metrics.hook';
import { MetricsController } from './metrics.controller';
import { MetricsService } from './metrics.service';

@Module({
  imports: [QueuesModule, StateMachineModule],
  controllers: [MetricsController],
  providers: [MetricsService, HttpMetricsHook],
  exports: [HttpMetricsHook],
})
export class MetricsModule {}
