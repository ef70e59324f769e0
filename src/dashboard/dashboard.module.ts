import { BullAdapter } from '@bull-board/api/bullAdapter';
import { ExpressAdapter } from '@bull-board/express';
import { BullBoardModule } from '@bull-board/nestjs';
import { getQueueToken } from '@nestjs/bull';
import type { Queue } from 'bull';
import { Module } from '@nestjs/common';
import { AuthModule } from '../auth/auth.module';
import { UsersService } from '../auth/users.service';
import { QueueName } from '../queues/queues';
import { QueuesModule } from '../queues/queues.module';
import { staffBasicAuth } from './basic-auth.middleware';

export const DASHBOARD_ROUTE = '/admin/queues';

/** bull-board at `/admin/queues`, for staff, over HTTP Basic. */
@Module({
  imports: [
    QueuesModule,
    BullBoardModule.forRootAsync({
      imports: [AuthModule, QueuesModule],
      inject: [UsersService, getQueueToken(QueueName.InstanceOperations)],
      useFactory: (users: UsersService, queue: Queue) => ({
        route: DASHBOARD_ROUTE,
        adapter: ExpressAdapter,
        middleware: staffBasicAuth(users, queue),
        boardOptions: { uiConfig: { boardTitle: 'Provisor queues' } },
      }),
    }),
    BullBoardModule.forFeature({ name: QueueName.InstanceOperations, adapter: BullAdapter }),
  ],
})
export class DashboardModule {}
