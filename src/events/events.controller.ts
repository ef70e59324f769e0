import {
  BadRequestException,
  Controller,
  Get,
  Headers,
  Logger,
  Query,
  Req,
  Res,
} from '@nestjs/common';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { OutgoingHttpHeaders } from 'node:http';
import {
  ApiBearerAuth,
  ApiHeader,
  ApiOperation,
  ApiProduces,
  ApiResponse,
  ApiTags,
} from '@nestjs/swagger';
import type { Actor } from '../auth/actor';
import { AllowQueryToken, CurrentUser } from '../auth/auth.decorators';
import { ApiErrors } from '../common/api-errors.decorator';
import {
  EventDto,
  EventListDto,
  ListEventsQuery,
  MAX_EVENT_ID,
  StreamEventsQuery,
} from './dto/event.dto';
import { HttpMetricsHook } from '../metrics/http-metrics.hook';
import { openEventStream } from './event-stream';
import { EventStreamHub } from './event-stream.service';
import { EventsService } from './events.service';

@ApiTags('events')
@ApiBearerAuth()
@Controller('api/events')
export class EventsController {
  private readonly logger = new Logger('EventStream');

  constructor(
    private readonly events: EventsService,
    private readonly hub: EventStreamHub,
    private readonly httpMetrics: HttpMetricsHook,
  ) {}

  @Get()
  @ApiOperation({ operationId: 'listEvents', summary: 'Domain events, oldest first' })
  @ApiResponse({ status: 200, type: EventListDto })
  @ApiErrors(400, 401)
  async list(@Query() query: ListEventsQuery, @CurrentUser() actor: Actor): Promise<EventListDto> {
    const events = await this.events.list(
      { instanceId: query.instance_id, after: query.after, limit: query.limit },
      actor,
    );
    return { items: events.map(EventDto.of) };
  }

  @Get('stream')
  @AllowQueryToken()
  @ApiOperation({
    operationId: 'streamEvents',
    summary: 'Domain events as they happen (Server-Sent Events); resumes from Last-Event-ID',
  })
  @ApiProduces('text/event-stream')
  @ApiHeader({
    name: 'Last-Event-ID',
    required: false,
    description: 'The last event id received: the stream resumes right after it',
  })
  @ApiResponse({
    status: 200,
    description:
      'text/event-stream: for each event `id: <event id>` and `data: <the event as JSON>`',
  })
  @ApiErrors(400, 401)
  async stream(
    @Query() query: StreamEventsQuery,
    @Headers('last-event-id') lastEventId: string | undefined,
    @CurrentUser() actor: Actor,
    @Req() req: FastifyRequest,
    @Res() reply: FastifyReply,
  ): Promise<void> {
    let after: number;
    if (lastEventId === undefined || lastEventId === '') {
      after = await this.events.latestId();
    } else if (/^\d{1,10}$/.test(lastEventId.trim()) && Number(lastEventId) <= MAX_EVENT_ID) {
      after = Number(lastEventId.trim());
    } else {
      throw new BadRequestException(
        `Last-Event-ID must be an event id (a whole number from 0 to ${MAX_EVENT_ID})`,
      );
    }
    // The stream writes to the socket itself, for as long as the client stays.
    reply.hijack();
    this.httpMetrics.observeWhenClosed(req, reply);
    openEventStream(
      req.raw,
      reply.raw,
      {
        actor,
        instanceId: query.instance_id,
        after,
        headers: reply.getHeaders() as OutgoingHttpHeaders,
      },
      this.events,
      this.hub,
      this.logger,
    );
  }
}
