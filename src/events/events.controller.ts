import { Controller, Get, Query } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiResponse, ApiTags } from '@nestjs/swagger';
import type { Actor } from '../auth/actor';
import { CurrentUser } from '../auth/auth.decorators';
import { ApiErrors } from '../common/api-errors.decorator';
import { EventDto, EventListDto, ListEventsQuery } from './dto/event.dto';
import { EventsService } from './events.service';

@ApiTags('events')
@ApiBearerAuth()
@Controller('api/events')
export class EventsController {
  constructor(private readonly events: EventsService) {}

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
}
