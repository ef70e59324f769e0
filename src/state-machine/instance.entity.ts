import { Column, Entity, PrimaryColumn } from 'typeorm';
import { InstanceState } from './instance.machine';

/** A VM instance. Its `state` is written by TransitionService alone. */
@Entity('instances')
export class Instance {
  @PrimaryColumn('uuid')
  id: string;

  @Column('varchar')
  name: string;

  @Column('varchar')
  description: string;

  @Column('varchar')
  flavor: string;

  @Column('varchar')
  image: string;

  @Column('varchar')
  state: InstanceState;

  @Column('text', { name: 'error_message' })
  errorMessage: string;

  @Column('text', { name: 'error_traceback' })
  errorTraceback: string;

  @Column('varchar', { name: 'backend_id' })
  backendId: string;

  @Column('uuid', { name: 'owner_id' })
  ownerId: string;

  /** The operation that owns the instance while it is in a transitional state. */
  @Column('uuid', { name: 'operation_id', nullable: true })
  operationId: string | null;

  @Column({ name: 'created_at' })
  createdAt: Date;

  @Column({ name: 'updated_at' })
  updatedAt: Date;
}
