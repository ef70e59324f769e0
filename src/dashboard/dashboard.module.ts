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
import { ErrorLog, toErrorBody } from '../common/all-exceptions.filter';
import { QueueName } from '../queues/queues';
import { QueuesModule } from '../queues/queues.module';
import { staffBasicAuth } from './basic-auth.hook';

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
  private readonly logger = new Logger('Dashboard');

  constructor(
    private readonly adapterHost: HttpAdapterHost,
    private readonly users: UsersService,
    @Inject(getQueueToken(QueueName.InstanceOperations)) private readonly queue: Queue,
  ) {}

  /**
   * Staff only, on every route of the dashboard (its page, its files and its JSON API): a hook
   * on the routes Fastify matched under `DASHBOARD_ROUTE`, so no spelling of a path reaches
   * one of them past it.
   */
  onModuleInit(): void {
    const fastify = this.adapterHost.httpAdapter.getInstance<FastifyInstance>();
    const auth = staffBasicAuth(this.users, this.queue);
    fastify.addHook('onRequest', async (request, reply) => {
      const route = request.routeOptions.url;
      const dashboard = route === DASHBOARD_ROUTE || route?.startsWith(`${DASHBOARD_ROUTE}/`);
      if (!dashboard) return;
      try {
        // A hook that answers returns the reply, so that Fastify goes no further.
        if (await auth(request, reply)) return reply;
      } catch (error) {
        // The dashboard's routes are bull-board's, outside Nest's filters: a failure here (the
        // database gone) is answered and logged as the API's own are.
        const { log } = request.raw as { log?: ErrorLog };
        const body = toErrorBody(error, log ?? this.logger);
        return reply.code(body.statusCode).type('application/json; charset=utf-8').send(body);
      }
    });
  }
}
