import { Body, Controller, Delete, Get, HttpCode, Param, Post, Query } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiQuery, ApiResponse, ApiTags } from '@nestjs/swagger';
import { Staff } from '../../../auth/auth.decorators';
import { ApiErrors } from '../../../common/api-errors.decorator';
import { ApiIdParam, parseUuid } from '../../../common/uuid.pipe';
import { CreateFaultDto, FaultDto, FaultListDto, SimVmDto, SimVmListDto } from './dto/fault.dto';
import { SimFaultsService } from './sim-faults.service';

@ApiTags('simulator')
@ApiBearerAuth()
@Staff()
@Controller('api/simulator')
export class SimulatorController {
  constructor(private readonly faults: SimFaultsService) {}

  @Post('faults')
  @HttpCode(201)
  @ApiOperation({
    operationId: 'createFault',
    summary: 'Arm a fault in the simulated cloud (staff)',
  })
  @ApiResponse({ status: 201, type: FaultDto })
  @ApiErrors(400, 401, 403)
  async arm(@Body() body: CreateFaultDto): Promise<FaultDto> {
    const fault = await this.faults.arm({
      operation: body.operation,
      instanceId: body.instance_id,
      mode: body.mode,
      message: body.message,
      times: body.times,
    });
    return FaultDto.of(fault);
  }

  @Get('faults')
  @ApiOperation({ operationId: 'listFaults', summary: 'Armed faults (staff)' })
  @ApiResponse({ status: 200, type: FaultListDto })
  @ApiErrors(401, 403)
  async list(): Promise<FaultListDto> {
    return { items: (await this.faults.list()).map(FaultDto.of) };
  }

  @Delete('faults/:id')
  @HttpCode(204)
  @ApiOperation({ operationId: 'deleteFault', summary: 'Disarm a fault (staff)' })
  @ApiResponse({ status: 204, description: 'Disarmed' })
  @ApiErrors(400, 401, 403, 404)
  @ApiIdParam("The fault's id")
  async disarm(@Param('id', parseUuid()) id: string): Promise<void> {
    await this.faults.disarm(id);
  }

  @Get('vms')
  @ApiOperation({
    operationId: 'listSimulatedVms',
    summary: "The simulated cloud's VMs with the operations each has performed (staff)",
  })
  @ApiQuery({ name: 'instance_id', required: false, type: String, format: 'uuid' })
  @ApiResponse({ status: 200, type: SimVmListDto })
  @ApiErrors(400, 401, 403)
  async vms(
    @Query('instance_id', parseUuid('instance_id', true))
    instanceId?: string,
  ): Promise<SimVmListDto> {
    return { items: (await this.faults.listVms(instanceId)).map(SimVmDto.of) };
  }
}
