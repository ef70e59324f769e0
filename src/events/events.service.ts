import { Injectable } from '@nestjs/common';
import { InjectDataSource, InjectRepository } from '@nestjs/typeorm';
import { DataSource, Repository } from 'typeorm';
import type { Actor } from '../auth/actor';
import { EntityStatements, Statements } from '../database/entity-statements';
import { TransactionRunner } from '../database/transaction-runner';
import { InstanceEvent } from '../state-machine/instance-event.entity';

export interface EventFilter {
  instanceId?: string;
  after?: number;
  limit: number;
}

/**
 * The stored event log, oldest first, scoped to the caller's instances. It reads through
 * `TransactionRunner.read`: committed events only, returned once they are on disk. No client is shown an event a power
 * cut could undo, nor given a stream cursor past ids that could be handed out again.
 */
@Injectable()
export class EventsService {
  private readonly statements: EntityStatements<InstanceEvent>;

  constructor(
    @InjectRepository(InstanceEvent) private readonly events: Repository<InstanceEvent>,
    private readonly tx: TransactionRunner,
    @InjectDataSource() private readonly dataSource: DataSource,
    statements: Statements,
  ) {
    this.statements = statements.of(InstanceEvent);
  }

  /** The newest event id now stored (0 when none): where a stream without Last-Event-ID starts. */
  async latestId(): Promise<number> {
    const row = await this.tx.read(() =>
      this.events
        .createQueryBuilder('e')
        .select('MAX(e.id)', 'id')
        .getRawOne<{ id: number | string | null }>(),
    );
    return Number(row?.id ?? 0);
  }

  /**
   * Whether `list` would show `event` to `actor` under `filter`'s instance: `list`'s conditions,
   * for events an event stream takes from memory (`EventStreamHub.recentAfter`).
   */
  shows(event: InstanceEvent, filter: Pick<EventFilter, 'instanceId'>, actor: Actor): boolean {
    return (
      (actor.isStaff || event.ownerId === actor.id) &&
      (!filter.instanceId || event.instanceId === filter.instanceId)
    );
  }

  /**
   * Every event stream reads here when it must read the log: a statement of one of four shapes
   * (owner or not, instance or not), prepared once, with the cursor and the page size as
   * parameters. Ids start at 1, so no cursor is `after: 0`.
   */
  async list(filter: EventFilter, actor: Actor): Promise<InstanceEvent[]> {
    const where: Partial<InstanceEvent> = {};
    if (!actor.isStaff) where.ownerId = actor.id;
    if (filter.instanceId) where.instanceId = filter.instanceId;
    return this.tx.read(() =>
      this.statements.findAfter(
        this.dataSource.manager,
        where,
        { key: 'id', value: filter.after ?? 0 },
        filter.limit,
      ),
    );
  }
}
