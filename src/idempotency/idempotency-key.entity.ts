import { Column, Entity, PrimaryColumn } from 'typeorm';

/** A request made with an `Idempotency-Key`, and the answer to repeat for 24 hours. */
@Entity('idempotency_keys')
export class IdempotencyKey {
  @PrimaryColumn('uuid', { name: 'user_id' })
  userId: string;

  @PrimaryColumn('varchar')
  key: string;

  /** Hash of method, path and body: the same key for another request is refused. */
  @Column('varchar')
  fingerprint: string;

  /** Null while the first request is still being answered. */
  @Column('integer', { name: 'status_code', nullable: true })
  statusCode: number | null;

  @Column('varchar', { nullable: true })
  location: string | null;

  @Column('simple-json', { nullable: true })
  body: object | null;

  @Column({ name: 'created_at' })
  createdAt: Date;
}
