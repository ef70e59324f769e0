import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { CLOUD_BACKEND } from './cloud-backend';
import { SimFault } from './drivers/simulated/sim-fault.entity';
import { SimFaultsService } from './drivers/simulated/sim-faults.service';
import { SimVm } from './drivers/simulated/sim-vm.entity';
import { SimulatedBackend } from './drivers/simulated/simulated.backend';
import { SimulatorController } from './drivers/simulated/simulator.controller';

/**
 * The cloud backend behind `CLOUD_BACKEND`. `simulated` is the one driver today (config refuses
 * any other), with its fault-injection API for staff.
 */
@Module({
  imports: [TypeOrmModule.forFeature([SimVm, SimFault])],
  controllers: [SimulatorController],
  providers: [
    SimFaultsService,
    SimulatedBackend,
    { provide: CLOUD_BACKEND, useExisting: SimulatedBackend },
  ],
  exports: [CLOUD_BACKEND],
})
export class BackendModule {}
