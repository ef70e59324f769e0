import { Column, Entity, PrimaryGeneratedColumn } from 'typeorm';

/**
 * A domain event, stored in the same transaction as the change it describes. Events outlive their
 * instance, so the owner is kept here for ownership checks.
 */
@Entity('instance_events')
export class InstanceEvent {
  @PrimaryGeneratedColumn('increment')
  id: number;

  @Column('varchar')
  type: string;

  @Column('uuid', { name: 'instance_id' })
  instanceId: string;

  @Column('uuid', { name: 'owner_id' })
  ownerId: string;

  /** The instance's state after the event; `deleted` once the record is gone. */
  @Column('varchar')
  state: string;

  @Column('text', { name: 'error_message' })
  errorMessage: string;

  @Column()
  at: Date;
}
