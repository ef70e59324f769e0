import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import type { Actor } from '../../auth/actor';
import { Action, INSTANCE_STATES, InstanceState } from '../../state-machine/instance.machine';
import type { InstanceTransition } from '../../state-machine/instance-transition.entity';
import type { Instance } from '../../state-machine/instance.entity';
import { FLAVOR_NAMES } from '../catalog';

export class InstanceDto {
  @ApiProperty({ format: 'uuid' }) id: string;
  @ApiProperty({ example: 'web-1' }) name: string;
  @ApiProperty({ example: '' }) description: string;
  @ApiProperty({ enum: FLAVOR_NAMES }) flavor: string;
  @ApiProperty({ example: 'debian-12' }) image: string;
  @ApiProperty({ enum: INSTANCE_STATES, enumName: 'InstanceState' }) state: InstanceState;
  @ApiProperty({
    description: "Empty unless state is 'erred'; what failed, in words a person can act on",
  })
  error_message: string;
  @ApiPropertyOptional({ description: 'Where the failure happened. Present only for staff.' })
  error_traceback?: string;
  @ApiProperty({ description: 'The id the backend gave the VM; empty until provisioned' })
  backend_id: string;
  @ApiProperty({ format: 'uuid' }) owner_id: string;
  @ApiProperty({ format: 'date-time' }) created_at: string;
  @ApiProperty({ format: 'date-time' }) updated_at: string;

  static of(instance: Instance, viewer: Actor): InstanceDto {
    const dto: InstanceDto = {
      id: instance.id,
      name: instance.name,
      description: instance.description,
      flavor: instance.flavor,
      image: instance.image,
      state: instance.state,
      error_message: instance.errorMessage,
      backend_id: instance.backendId,
      owner_id: instance.ownerId,
      created_at: instance.createdAt.toISOString(),
      updated_at: instance.updatedAt.toISOString(),
    };
    if (viewer.isStaff) dto.error_traceback = instance.errorTraceback;
    return dto;
  }
}

export class InstancePageDto {
  @ApiProperty({ type: [InstanceDto] }) items: InstanceDto[];
  @ApiProperty({ type: 'integer', description: 'How many match the filters in all' })
  total: number;
  @ApiProperty({ type: 'integer' }) limit: number;
  @ApiProperty({ type: 'integer' }) offset: number;
}

export class TransitionDto {
  @ApiProperty({ enum: INSTANCE_STATES, enumName: 'InstanceState', nullable: true, type: String })
  from: InstanceState | null;
  @ApiProperty({ enum: INSTANCE_STATES, enumName: 'InstanceState' }) to: InstanceState;
  @ApiProperty({ enum: [...Object.values(Action), 'update', 'set_erred', 'set_ok'] })
  action: string;
  @ApiProperty({ format: 'date-time' }) at: string;
  @ApiProperty() error_message: string;

  static of(t: InstanceTransition): TransitionDto {
    return {
      from: t.fromState,
      to: t.toState,
      action: t.action,
      at: t.at.toISOString(),
      error_message: t.errorMessage,
    };
  }
}

export class TransitionListDto {
  @ApiProperty({ type: [TransitionDto] }) items: TransitionDto[];
}

export class FlavorDto {
  @ApiProperty({ enum: FLAVOR_NAMES }) name: string;
  @ApiProperty({ type: 'integer' }) cores: number;
  @ApiProperty({ type: 'integer' }) ram_mb: number;
  @ApiProperty({ type: 'integer' }) disk_gb: number;
}

export class FlavorListDto {
  @ApiProperty({ type: [FlavorDto] }) items: FlavorDto[];
}

export class ImageDto {
  @ApiProperty({ example: 'debian-12' }) name: string;
}

export class ImageListDto {
  @ApiProperty({ type: [ImageDto] }) items: ImageDto[];
}
