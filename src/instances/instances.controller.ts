import {
  applyDecorators,
  Body,
  Controller,
  Delete,
  Get,
  HttpCode,
  Param,
  Patch,
  Post,
  Query,
  Res,
} from '@nestjs/common';
import { ApiBearerAuth, ApiHeader, ApiOperation, ApiResponse, ApiTags } from '@nestjs/swagger';
import type { FastifyReply } from 'fastify';
import type { Actor } from '../auth/actor';
import { CurrentUser, Staff } from '../auth/auth.decorators';
import { ApiErrors } from '../common/api-errors.decorator';
import { NoBody } from '../common/no-body.guard';
import { ApiIdParam, parseUuid } from '../common/uuid.pipe';
import { Idempotency } from '../idempotency/idempotency.service';
import { Idempotent, IdempotentCall } from '../idempotency/idempotent.decorator';
import { RequestId } from '../logging/request-id.decorator';
import { Action } from '../state-machine/instance.machine';
import type { OperationParams } from '../state-machine/operation.entity';
import { TransitionService } from '../state-machine/transition.service';
import { DEFAULT_IMAGE } from './catalog';
import { InstanceDto, InstancePageDto, TransitionDto, TransitionListDto } from './dto/instance.dto';
import {
  CreateInstanceDto,
  ResizeInstanceDto,
  SetErredDto,
  SetOkDto,
  UpdateInstanceDto,
} from './dto/instance-input.dto';
import { ListInstancesQuery } from './dto/list-instances.query';
import { InstanceQueries } from './instance-queries.service';

/** An action route: `202` with the instance, idempotent by key, documented as such. */
function ActionRoute(operationId: string, summary: string, errors = [400, 401, 404, 409, 422]) {
  return applyDecorators(
    HttpCode(202),
    ApiOperation({ operationId, summary }),
    ApiHeader({
      name: 'Idempotency-Key',
      required: false,
      description: 'A repeat with the same key within 24 hours answers the first response again',
    }),
    ApiResponse({
      status: 202,
      type: InstanceDto,
      description: 'Accepted; the instance is in its *_scheduled state',
    }),
    ApiErrors(...errors),
  );
}

@ApiTags('instances')
@ApiBearerAuth()
@Controller('api/instances')
export class InstancesController {
  constructor(
    private readonly transitions: TransitionService,
    private readonly queries: InstanceQueries,
    private readonly idempotency: Idempotency,
  ) {}

  @Post()
  @ActionRoute(
    'createInstance',
    'Create an instance; provisioning runs in the background',
    // 409: a repeat of an Idempotency-Key whose first request is still running.
    [400, 401, 409, 413, 422],
  )
  async create(
    @Body() body: CreateInstanceDto,
    @CurrentUser() actor: Actor,
    @RequestId() requestId: string | undefined,
    @Res({ passthrough: true }) res: FastifyReply,
    @Idempotent() call: IdempotentCall | null,
  ): Promise<InstanceDto> {
    return this.idempotency.run(call, async () => {
      const instance = await this.transitions.create(
        {
          name: body.name,
          flavor: body.flavor,
          image: body.image ?? DEFAULT_IMAGE,
          description: body.description ?? '',
        },
        actor,
        requestId,
      );
      void res.header('Location', `/api/instances/${instance.id}`);
      return InstanceDto.of(instance, actor);
    });
  }

  @Get()
  @ApiOperation({ operationId: 'listInstances', summary: 'Instances, newest first' })
  @ApiResponse({ status: 200, type: InstancePageDto })
  @ApiErrors(400, 401)
  async list(
    @Query() query: ListInstancesQuery,
    @CurrentUser() actor: Actor,
  ): Promise<InstancePageDto> {
    const { items, total } = await this.queries.list(query, actor);
    return {
      items: items.map((i) => InstanceDto.of(i, actor)),
      total,
      limit: query.limit,
      offset: query.offset,
    };
  }

  @Get(':id')
  @ApiOperation({ operationId: 'getInstance', summary: 'One instance; poll its state' })
  @ApiResponse({ status: 200, type: InstanceDto })
  @ApiErrors(400, 401, 404)
  @ApiIdParam("The instance's id")
  async get(
    @Param('id', parseUuid()) id: string,
    @CurrentUser() actor: Actor,
  ): Promise<InstanceDto> {
    return InstanceDto.of(await this.queries.get(id, actor), actor);
  }

  @Patch(':id')
  @ApiOperation({
    operationId: 'updateInstance',
    summary: 'Rename or describe an online or offline instance',
  })
  @ApiResponse({ status: 200, type: InstanceDto })
  @ApiErrors(400, 401, 404, 409)
  @ApiIdParam("The instance's id")
  async update(
    @Param('id', parseUuid()) id: string,
    @Body() body: UpdateInstanceDto,
    @CurrentUser() actor: Actor,
  ): Promise<InstanceDto> {
    return InstanceDto.of(await this.transitions.update(id, body, actor), actor);
  }

  @Delete(':id')
  @NoBody()
  @ActionRoute('deleteInstance', 'Delete an offline or erred instance (forced from erred)')
  @ApiIdParam("The instance's id")
  async delete(
    @Param('id', parseUuid()) id: string,
    @CurrentUser() actor: Actor,
    @RequestId() requestId: string | undefined,
    @Idempotent() call: IdempotentCall | null,
  ): Promise<InstanceDto> {
    return this.act(id, Action.Delete, actor, { requestId }, call);
  }

  @Post(':id/start')
  @NoBody()
  @ActionRoute('startInstance', 'Start an offline instance')
  @ApiIdParam("The instance's id")
  async start(
    @Param('id', parseUuid()) id: string,
    @CurrentUser() actor: Actor,
    @RequestId() requestId: string | undefined,
    @Idempotent() call: IdempotentCall | null,
  ): Promise<InstanceDto> {
    return this.act(id, Action.Start, actor, { requestId }, call);
  }

  @Post(':id/stop')
  @NoBody()
  @ActionRoute('stopInstance', 'Stop an online instance')
  @ApiIdParam("The instance's id")
  async stop(
    @Param('id', parseUuid()) id: string,
    @CurrentUser() actor: Actor,
    @RequestId() requestId: string | undefined,
    @Idempotent() call: IdempotentCall | null,
  ): Promise<InstanceDto> {
    return this.act(id, Action.Stop, actor, { requestId }, call);
  }

  @Post(':id/restart')
  @NoBody()
  @ActionRoute('restartInstance', 'Restart an online instance')
  @ApiIdParam("The instance's id")
  async restart(
    @Param('id', parseUuid()) id: string,
    @CurrentUser() actor: Actor,
    @RequestId() requestId: string | undefined,
    @Idempotent() call: IdempotentCall | null,
  ): Promise<InstanceDto> {
    return this.act(id, Action.Restart, actor, { requestId }, call);
  }

  @Post(':id/resize')
  @ActionRoute('resizeInstance', 'Change the flavor of an offline instance')
  @ApiIdParam("The instance's id")
  async resize(
    @Param('id', parseUuid()) id: string,
    @Body() body: ResizeInstanceDto,
    @CurrentUser() actor: Actor,
    @RequestId() requestId: string | undefined,
    @Idempotent() call: IdempotentCall | null,
  ): Promise<InstanceDto> {
    return this.act(id, Action.Resize, actor, { params: { flavor: body.flavor }, requestId }, call);
  }

  @Post(':id/pull')
  @NoBody()
  @ActionRoute('pullInstance', 'Ask the backend what the VM really is; clears an error state')
  @ApiIdParam("The instance's id")
  async pull(
    @Param('id', parseUuid()) id: string,
    @CurrentUser() actor: Actor,
    @RequestId() requestId: string | undefined,
    @Idempotent() call: IdempotentCall | null,
  ): Promise<InstanceDto> {
    return this.act(id, Action.Pull, actor, { requestId }, call);
  }

  @Get(':id/transitions')
  @ApiOperation({
    operationId: 'listInstanceTransitions',
    summary: "The instance's state history, oldest first",
  })
  @ApiResponse({ status: 200, type: TransitionListDto })
  @ApiErrors(400, 401, 404)
  @ApiIdParam("The instance's id")
  async transitionsOf(
    @Param('id', parseUuid()) id: string,
    @CurrentUser() actor: Actor,
  ): Promise<TransitionListDto> {
    return { items: (await this.queries.history(id, actor)).map(TransitionDto.of) };
  }

  @Post(':id/set_erred')
  @Staff()
  @HttpCode(200)
  @ApiOperation({
    operationId: 'setInstanceErred',
    summary: 'Force erred from any state, without the backend (staff)',
  })
  @ApiResponse({ status: 200, type: InstanceDto })
  @ApiErrors(400, 401, 403, 404)
  @ApiIdParam("The instance's id")
  async setErred(
    @Param('id', parseUuid()) id: string,
    @Body() body: SetErredDto,
    @CurrentUser() actor: Actor,
  ): Promise<InstanceDto> {
    return InstanceDto.of(await this.transitions.setErred(id, body.error_message, actor), actor);
  }

  @Post(':id/set_ok')
  @Staff()
  @HttpCode(200)
  @ApiOperation({
    operationId: 'setInstanceOk',
    summary: 'Force online or offline from any state, without the backend (staff)',
  })
  @ApiResponse({ status: 200, type: InstanceDto })
  @ApiErrors(400, 401, 403, 404)
  @ApiIdParam("The instance's id")
  async setOk(
    @Param('id', parseUuid()) id: string,
    @Body() body: SetOkDto,
    @CurrentUser() actor: Actor,
  ): Promise<InstanceDto> {
    return InstanceDto.of(await this.transitions.setOk(id, body.state, actor), actor);
  }

  @NoBody()
  @Post(':id/unlink')
  @Staff()
  @HttpCode(204)
  @ApiOperation({
    operationId: 'unlinkInstance',
    summary: 'Remove the record without touching the backend (staff)',
  })
  @ApiResponse({ status: 204, description: 'Removed' })
  @ApiErrors(400, 401, 403, 404)
  @ApiIdParam("The instance's id")
  async unlink(@Param('id', parseUuid()) id: string, @CurrentUser() actor: Actor): Promise<void> {
    await this.transitions.unlink(id, actor);
  }

  /** An action route's work: schedule the action, answer the instance, once per Idempotency-Key. */
  private act(
    id: string,
    action: Exclude<Action, Action.Provision>,
    actor: Actor,
    options: { params?: OperationParams; requestId?: string },
    call: IdempotentCall | null,
  ): Promise<InstanceDto> {
    return this.idempotency.run(call, async () =>
      InstanceDto.of(await this.transitions.schedule(id, action, actor, options), actor),
    );
  }
}
