import { Column, Entity, PrimaryGeneratedColumn } from 'typeorm';
import { Action, InstanceState } from './instance.machine';

/** One step of an instance's history, for `GET /api/instances/{id}/transitions`. */
@Entity('instance_transitions')
export class InstanceTransition {
  @PrimaryGeneratedColumn('increment')
  id: number;

  @Column('uuid', { name: 'instance_id' })
  instanceId: string;

  @Column('varchar')
  action: Action | 'update' | 'set_erred' | 'set_ok';

  @Column('varchar', { name: 'from_state', nullable: true })
  fromState: InstanceState | null;

  @Column('varchar', { name: 'to_state' })
  toState: InstanceState;

  @Column('text', { name: 'error_message' })
  errorMessage: string;

  @Column()
  at: Date;
}
