import { Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { Repository } from 'typeorm';
import type { Actor } from '../auth/actor';
import { InstanceEvent } from '../state-machine/instance-event.entity';

export interface EventFilter {
  instanceId?: string;
  after?: number;
  limit: number;
}

/** The stored event log, oldest first, scoped to the caller's instances. */
@Injectable()
export class EventsService {
  constructor(
    @InjectRepository(InstanceEvent) private readonly events: Repository<InstanceEvent>,
  ) {}

  /** The newest event id now stored (0 when none): where a stream without Last-Event-ID starts. */
  async latestId(): Promise<number> {
    const row: { id: number | string | null } | undefined = await this.events
      .createQueryBuilder('e')
      .select('MAX(e.id)', 'id')
      .getRawOne();
    return Number(row?.id ?? 0);
  }

  list(filter: EventFilter, actor: Actor): Promise<InstanceEvent[]> {
    const qb = this.events.createQueryBuilder('e');
    if (!actor.isStaff) qb.andWhere('e.owner_id = :owner', { owner: actor.id });
    if (filter.instanceId)
      qb.andWhere('e.instance_id = :instance', { instance: filter.instanceId });
    // As text: TypeORM writes numeric parameters into SQLite's SQL, which made every read of a
    // stream a statement never seen before (prepared anew, and pushing the hot path's prepared
    // statements out of the driver's cache). Both databases compare it with the id as a number.
    if (filter.after !== undefined) qb.andWhere('e.id > :after', { after: String(filter.after) });
    return qb.orderBy('e.id', 'ASC').limit(filter.limit).getMany();
  }
}
