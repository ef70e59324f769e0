import { Column, Entity, PrimaryColumn } from 'typeorm';

/** How many instances one owner has in one state; written only by TransitionService. */
@Entity('instance_counts')
export class InstanceCount {
  @PrimaryColumn('uuid', { name: 'owner_id' })
  ownerId: string;

  @PrimaryColumn('varchar')
  state: string;

  @Column('integer')
  count: number;
}
