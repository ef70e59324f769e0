import { Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { Repository } from 'typeorm';
import type { Actor } from '../auth/actor';
import { DomainError } from '../common/domain-error';
import { InstanceTransition } from '../state-machine/instance-transition.entity';
import { Instance } from '../state-machine/instance.entity';
import type { ListInstancesQuery } from './dto/list-instances.query';

/** Reads of instances, always scoped to what the caller may see. */
@Injectable()
export class InstanceQueries {
  constructor(
    @InjectRepository(Instance) private readonly instances: Repository<Instance>,
    @InjectRepository(InstanceTransition)
    private readonly transitions: Repository<InstanceTransition>,
  ) {}

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
    const [items, total] = await qb
      .orderBy('i.created_at', 'DESC')
      .addOrderBy('i.id', 'DESC')
      .take(query.limit)
      .skip(query.offset)
      .getManyAndCount();
    return { items, total };
  }

  async get(id: string, actor: Actor): Promise<Instance> {
    const instance = await this.instances.findOneBy(
      actor.isStaff ? { id } : { id, ownerId: actor.id },
    );
    if (!instance) throw DomainError.notFound('Instance');
    return instance;
  }

  async history(id: string, actor: Actor): Promise<InstanceTransition[]> {
    await this.get(id, actor);
    return this.transitions.find({ where: { instanceId: id }, order: { id: 'ASC' } });
  }
}
