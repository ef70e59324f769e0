import { Injectable } from '@nestjs/common';
import { InjectDataSource, InjectRepository } from '@nestjs/typeorm';
import { DataSource, Repository } from 'typeorm';
import type { Actor } from '../auth/actor';
import { DomainError } from '../common/domain-error';
import { EntityStatements, Statements } from '../database/entity-statements';
import { TransactionRunner } from '../database/transaction-runner';
import { InstanceTransition } from '../state-machine/instance-transition.entity';
import { InstanceCount } from '../state-machine/instance-count.entity';
import { Instance } from '../state-machine/instance.entity';
import type { ListInstancesQuery } from './dto/list-instances.query';

/**
 * Reads of instances, always scoped to what the caller may see. Each runs through
 * `TransactionRunner.read`: it sees committed changes only, and answers once they are on disk.
 */
@Injectable()
export class InstanceQueries {
  private readonly statements: EntityStatements<Instance>;

  constructor(
    @InjectRepository(Instance) private readonly instances: Repository<Instance>,
    @InjectRepository(InstanceTransition)
    private readonly transitions: Repository<InstanceTransition>,
    private readonly tx: TransactionRunner,
    @InjectDataSource() private readonly dataSource: DataSource,
    statements: Statements,
  ) {
    this.statements = statements.of(Instance);
  }

  /**
   * A page and the total. Without a name filter the total is a sum over `instance_counts` (a row
   * per owner and state), so it costs the same at a thousand instances or a million; a name
   * filter has to count the matching rows.
   */
  async list(
    query: ListInstancesQuery,
    actor: Actor,
  ): Promise<{ items: Instance[]; total: number }> {
    const qb = this.instances.createQueryBuilder('i');
    if (!actor.isStaff) qb.andWhere('i.owner_id = :owner', { owner: actor.id });
    if (query.state?.length) qb.andWhere('i.state IN (:...states)', { states: query.state });
    if (query.name) {
      const escaped = query.name.toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`);
      qb.andWhere("LOWER(i.name) LIKE :name ESCAPE '\\'", { name: `%${escaped}%` });
    }
    qb.orderBy('i.created_at', 'DESC')
      .addOrderBy('i.id', 'DESC')
      .take(query.limit)
      .skip(query.offset);
    const [items, total] = await this.tx.read(() =>
      query.name
        ? qb.getManyAndCount()
        : Promise.all([qb.getMany(), this.countFromTally(query, actor)]),
    );
    return { items, total };
  }

  private async countFromTally(query: ListInstancesQuery, actor: Actor): Promise<number> {
    const qb = this.instances.manager
      .createQueryBuilder(InstanceCount, 'c')
      .select('COALESCE(SUM(c.count), 0)', 'total');
    if (!actor.isStaff) qb.andWhere('c.owner_id = :owner', { owner: actor.id });
    if (query.state?.length) qb.andWhere('c.state IN (:...states)', { states: query.state });
    const row = await qb.getRawOne<{ total: string | number }>();
    return Number(row?.total ?? 0);
  }

  /**
   * What a client polling an instance's `state` asks, so it is one statement of two shapes
   * (staff or owner), prepared once (`EntityStatements`): TypeORM's `findOneBy` builds its query
   * anew on each call, and PostgreSQL parses and plans it anew.
   */
  async get(id: string, actor: Actor): Promise<Instance> {
    // A 404 may rest on a removal not yet on disk: it waits too.
    const instance = await this.tx.read(() =>
      this.statements.findOne(
        this.dataSource.manager,
        actor.isStaff ? { id } : { id, ownerId: actor.id },
      ),
    );
    if (!instance) throw DomainError.notFound('Instance');
    return instance;
  }

  async history(id: string, actor: Actor): Promise<InstanceTransition[]> {
    await this.get(id, actor);
    return this.tx.read(() =>
      this.transitions.find({ where: { instanceId: id }, order: { id: 'ASC' } }),
    );
  }
}
