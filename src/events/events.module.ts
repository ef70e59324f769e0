import { Module } from '@nestjs/common';
import { StateMachineModule } from '../state-machine/state-machine.module';
import { EventsController } from './events.controller';
import { EventsService } from './events.service';

@Module({
  imports: [StateMachineModule],
  controllers: [EventsController],
  providers: [EventsService],
})
export class EventsModule {}
