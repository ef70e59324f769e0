import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { InstanceEvent } from './instance-event.entity';
import { InstanceTransition } from './instance-transition.entity';
import { InstanceCount } from './instance-count.entity';
import { Instance } from './instance.entity';
import { Operation } from './operation.entity';
import { TransitionService } from './transition.service';

@Module({
  imports: [
    TypeOrmModule.forFeature([
      Instance,
      InstanceCount,
      InstanceTransition,
      InstanceEvent,
      Operation,
    ]),
  ],
  providers: [TransitionService],
  exports: [TransitionService, TypeOrmModule],
})
export class StateMachineModule {}
