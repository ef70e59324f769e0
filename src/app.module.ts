import { BullModule } from '@nestjs/bull';
import { Module } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { EventEmitterModule } from '@nestjs/event-emitter';
import { AuthModule } from './auth/auth.module';
import { BackendModule } from './backend/backend.module';
import { AllExceptionsFilter } from './common/all-exceptions.filter';
import { AppConfig } from './config/app-config';
import { AppConfigModule } from './config/config.module';
import { DashboardModule } from './dashboard/dashboard.module';
import { DatabaseModule } from './database/database.module';
import { EventsModule } from './events/events.module';
import { HealthModule } from './health/health.module';
import { InstancesModule } from './instances/instances.module';
import { JobsModule } from './jobs/jobs.module';
import { LoggingModule } from './logging/logging.module';
import { MetricsModule } from './metrics/metrics.module';

@Module({
  imports: [
    AppConfigModule,
    LoggingModule,
    DatabaseModule,
    EventEmitterModule.forRoot(),
    BullModule.forRootAsync({
      inject: [AppConfig],
      useFactory: (config: AppConfig) => ({
        redis: config.redisUrl,
        prefix: config.queuePrefix,
        // A killed worker's jobs are taken up again once their lock lapses: JOB_LOCK_MS bounds
        // that wait. Bull renews the lock at half that while the worker lives.
        settings: { lockDuration: config.jobLockMs, stalledInterval: config.jobLockMs },
      }),
    }),
    AuthModule,
    InstancesModule,
    EventsModule,
    JobsModule,
    BackendModule,
    HealthModule,
    DashboardModule,
    MetricsModule,
  ],
  providers: [{ provide: APP_FILTER, useClass: AllExceptionsFilter }],
})
export class AppModule {}
