import { Column, Entity, PrimaryColumn } from 'typeorm';

export type SimVmState = 'online' | 'offline' | 'deleted';

/** A VM of the simulated cloud. Kept after deletion so its operation counts can be checked. */
@Entity('sim_vms')
export class SimVm {
  @PrimaryColumn('varchar', { name: 'backend_id' })
  backendId: string;

  @Column('uuid', { name: 'instance_id' })
  instanceId: string;

  @Column('varchar')
  name: string;

  @Column('varchar')
  flavor: string;

  @Column('varchar')
  image: string;

  @Column('varchar')
  state: SimVmState;

  /** The last operation applied, so a repeat of it changes nothing. */
  @Column('uuid', { name: 'last_operation_id', nullable: true })
  lastOperationId: string | null;

  /** Operations performed to effect, by name. */
  @Column('simple-json', { name: 'op_counts' })
  opCounts: Record<string, number>;

  @Column({ name: 'created_at' })
  createdAt: Date;

  @Column({ name: 'updated_at' })
  updatedAt: Date;
}
