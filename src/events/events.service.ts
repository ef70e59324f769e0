import { Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { Repository } from 'typeorm';
import type { Actor } from '../auth/actor';
import { TransactionRunner } from '../database/transaction-runner';
import { InstanceEvent } from '../state-machine/instance-event.entity';

export interface EventFilter {
  instanceId?: string;
  after?: number;
  limit: number;
}

/**
 * The stored event log, oldest first, scoped to the caller's instances. What it reads is
 * returned once it is on disk (`TransactionRunner.durable`): no client is shown an event a power
 * cut could undo, nor given a stream cursor past ids that could be handed out again.
 */
@Injectable()
export class EventsService {
  constructor(
    @InjectRepository(InstanceEvent) private readonly events: Repository<InstanceEvent>,
    private readonly tx: TransactionRunner,
  ) {}

  /** The newest event id now stored (0 when none): where a stream without Last-Event-ID starts. */
  async latestId(): Promise<number> {
    const row: { id: number | string | null } | undefined = await this.events
      .createQueryBuilder('e')
      .select('MAX(e.id)', 'id')
      .getRawOne();
    await this.tx.durable();
    return Number(row?.id ?? 0);
  }

  async list(filter: EventFilter, actor: Actor): Promise<InstanceEvent[]> {
    const qb = this.events.createQueryBuilder('e');
    if (!actor.isStaff) qb.andWhere('e.owner_id = :owner', { owner: actor.id });
    if (filter.instanceId)
      qb.andWhere('e.instance_id = :instance', { instance: filter.instanceId });
    // As text: TypeORM writes numeric parameters into SQLite's SQL, which made every read of a
    // stream a statement never seen before (prepared anew, and pushing the hot path's prepared
    // statements out of the driver's cache). Both databases compare it with the id as a number.
    if (filter.after !== undefined) qb.andWhere('e.id > :after', { after: String(filter.after) });
    const events = await qb.orderBy('e.id', 'ASC').limit(filter.limit).getMany();
    await this.tx.durable();
    return events;
  }
}
