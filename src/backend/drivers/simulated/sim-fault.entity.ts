import { Column, Entity, PrimaryColumn } from 'typeorm';

export const SIM_OPERATIONS = [
  'provision',
  'start',
  'stop',
  'restart',
  'resize',
  'delete',
  'pull',
] as const;
export type SimOperation = (typeof SIM_OPERATIONS)[number];
export const FAULT_MODES = ['error', 'transient', 'hang'] as const;
export type FaultMode = (typeof FAULT_MODES)[number];

/** An armed fault of the simulated cloud; it hits `remaining` more operations. */
@Entity('sim_faults')
export class SimFault {
  @PrimaryColumn('uuid')
  id: string;

  @Column('varchar')
  operation: SimOperation;

  @Column('uuid', { name: 'instance_id', nullable: true })
  instanceId: string | null;

  @Column('varchar')
  mode: FaultMode;

  @Column('varchar')
  message: string;

  @Column('integer')
  remaining: number;

  @Column({ name: 'created_at' })
  createdAt: Date;
}
