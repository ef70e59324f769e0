import { Column, Entity, PrimaryColumn } from 'typeorm';

@Entity('users')
export class User {
  @PrimaryColumn('uuid')
  id: string;

  @Column('varchar')
  username: string;

  @Column('boolean', { name: 'is_staff' })
  isStaff: boolean;

  /** SHA-256 of the API token; the token itself is shown once and never stored. */
  @Column('varchar', { name: 'token_hash' })
  tokenHash: string;

  @Column({ name: 'created_at' })
  createdAt: Date;
}
