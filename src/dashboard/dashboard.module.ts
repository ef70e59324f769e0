import { BullAdapter } from '@bull-board/api/bullAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import { BullBoardModule } from '@bull-board/nestjs';
import { getQueueToken } from '@nestjs/bull';
import type { Queue } from 'bull';
import { Inject, Logger, Module, OnModuleInit } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { FastifyInstance } from 'fastify';
import { AuthModule } from '../auth/auth.module';
import { UsersService } from '../auth/users.service';
import { QueueName } from '../queues/queues';
import { QueuesModule } from '../queues/queues.module';
import { staffOnlyUnder } from './basic-auth.hook';

export const DASHBOARD_ROUTE = '/admin/queues';

/** bull-board at `/admin/queues`, for staff, over HTTP Basic. */
@Module({
  imports: [
    AuthModule,
    QueuesModule,
    BullBoardModule.forRoot({
      route: DASHBOARD_ROUTE,
      adapter: FastifyAdapter,
      boardOptions: { uiConfig: { boardTitle: 'Provisor queues' } },
    }),
    BullBoardModule.forFeature({ name: QueueName.InstanceOperations, adapter: BullAdapter }),
  ],
})
export class DashboardModule implements OnModuleInit {
  constructor(
    private readonly adapterHost: HttpAdapterHost,
    private readonly users: UsersService,
    @Inject(getQueueToken(QueueName.InstanceOperations)) private readonly queue: Queue,
  ) {}

  /** Staff only, on every route of the dashboard (`staffOnlyUnder`). */
  onModuleInit(): void {
    const fastify = this.adapterHost.httpAdapter.getInstance<FastifyInstance>();
    fastify.addHook(
      'onRequest',
      staffOnlyUnder(DASHBOARD_ROUTE, this.users, this.queue, new Logger('Dashboard')),
    );
  }
}
