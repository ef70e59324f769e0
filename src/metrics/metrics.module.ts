import { MiddlewareConsumer, Module, NestModule } from '@nestjs/common';
import { QueuesModule } from '../queues/queues.module';
import { StateMachineModule } from '../state-machine/state-machine.module';
import { HttpMetricsMiddleware } from './http-metrics.middleware';
import { MetricsController } from './metrics.controller';
import { MetricsService } from './metrics.service';

@Module({
  imports: [QueuesModule, StateMachineModule],
  controllers: [MetricsController],
  providers: [MetricsService],
})
export class MetricsModule implements NestModule {
  configure(consumer: MiddlewareConsumer): void {
    consumer.apply(HttpMetricsMiddleware).forRoutes('*path');
  }
}
