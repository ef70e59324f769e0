import { ApiProperty } from '@nestjs/swagger';
import { OptionalButNotNull } from '../../../../common/present.decorator';
import { LowerCase } from '../../../../common/uuid.pipe';
import { IsIn, IsInt, IsString, IsUUID, Max, MaxLength, Min } from 'class-validator';
import {
  FAULT_MODES,
  FaultMode,
  SIM_OPERATIONS,
  SimFault,
  SimOperation,
} from '../sim-fault.entity';
import type { SimVm } from '../sim-vm.entity';

export class CreateFaultDto {
  @ApiProperty({ enum: SIM_OPERATIONS, description: 'The backend operation the fault hits' })
  @IsIn(SIM_OPERATIONS, { message: `operation must be one of: ${SIM_OPERATIONS.join(', ')}` })
  operation: SimOperation;

  @ApiProperty({
    required: false,
    format: 'uuid',
    description: 'Only this instance; any when omitted',
  })
  @OptionalButNotNull()
  @IsUUID('all', { message: 'instance_id must be a UUID' })
  @LowerCase()
  instance_id?: string;

  @ApiProperty({
    enum: FAULT_MODES,
    description:
      '`error`: fails permanently; `transient`: fails, a retry may succeed; `hang`: never answers, so the job times out',
  })
  @IsIn(FAULT_MODES, { message: `mode must be one of: ${FAULT_MODES.join(', ')}` })
  mode: FaultMode;

  @ApiProperty({ required: false, maxLength: 500, example: 'host unreachable' })
  @OptionalButNotNull()
  @IsString({ message: 'message must be a string' })
  @MaxLength(500, { message: 'message must be at most 500 characters' })
  message?: string;

  @ApiProperty({
    required: false,
    type: 'integer',
    minimum: 1,
    maximum: 1000,
    example: 1,
    description: 'How many operations it hits. Default: 1',
  })
  @OptionalButNotNull()
  @IsInt({ message: 'times must be a whole number' })
  @Min(1, { message: 'times must be at least 1' })
  @Max(1000, { message: 'times must be at most 1000' })
  times?: number;
}

export class FaultDto {
  @ApiProperty({ format: 'uuid' }) id: string;
  @ApiProperty({ enum: SIM_OPERATIONS }) operation: SimOperation;
  @ApiProperty({ format: 'uuid', nullable: true, type: String }) instance_id: string | null;
  @ApiProperty({ enum: FAULT_MODES }) mode: FaultMode;
  @ApiProperty() message: string;
  @ApiProperty({ type: 'integer', description: 'How many more operations it hits' })
  times: number;
  @ApiProperty({ format: 'date-time' }) created_at: string;

  static of(f: SimFault): FaultDto {
    return {
      id: f.id,
      operation: f.operation,
      instance_id: f.instanceId,
      mode: f.mode,
      message: f.message,
      times: f.remaining,
      created_at: f.createdAt.toISOString(),
    };
  }
}

export class FaultListDto {
  @ApiProperty({ type: [FaultDto] }) items: FaultDto[];
}

export class SimVmDto {
  @ApiProperty() backend_id: string;
  @ApiProperty({ format: 'uuid' }) instance_id: string;
  @ApiProperty({ enum: ['online', 'offline', 'deleted'] }) state: string;
  @ApiProperty() flavor: string;
  @ApiProperty({
    description: 'Operations performed to effect, by name',
    example: { provision: 1, stop: 1 },
    type: 'object',
    additionalProperties: { type: 'integer' },
  })
  op_counts: Record<string, number>;

  static of(vm: SimVm): SimVmDto {
    return {
      backend_id: vm.backendId,
      instance_id: vm.instanceId,
      state: vm.state,
      flavor: vm.flavor,
      op_counts: vm.opCounts,
    };
  }
}

export class SimVmListDto {
  @ApiProperty({ type: [SimVmDto] }) items: SimVmDto[];
}
