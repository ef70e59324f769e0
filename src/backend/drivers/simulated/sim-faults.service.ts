import { Injectable } from '@nestjs/common';
import { InjectDataSource, InjectRepository } from '@nestjs/typeorm';
import { randomUUID } from 'node:crypto';
import { DataSource, Repository } from 'typeorm';
import { DomainError } from '../../../common/domain-error';
import { EntityStatements, Statements } from '../../../database/entity-statements';
import { TransactionRunner } from '../../../database/transaction-runner';
import { FaultMode, SimFault, SimOperation } from './sim-fault.entity';
import { SimVm } from './sim-vm.entity';

export interface NewFault {
  operation: SimOperation;
  instanceId?: string;
  mode: FaultMode;
  message?: string;
  times?: number;
}

const DEFAULT_MESSAGE: Record<FaultMode, string> = {
  error: 'injected failure',
  transient: 'injected transient failure',
  hang: 'injected hang',
};

@Injectable()
export class SimFaultsService {
  /** The check every operation makes, as a statement built once (prepared on PostgreSQL). */
  private readonly armed: EntityStatements<SimFault>;

  constructor(
    @InjectRepository(SimFault) private readonly faults: Repository<SimFault>,
    @InjectRepository(SimVm) private readonly vms: Repository<SimVm>,
    private readonly tx: TransactionRunner,
    @InjectDataSource() private readonly dataSource: DataSource,
    statements: Statements,
  ) {
    this.armed = statements.of(SimFault);
  }

  async arm(input: NewFault): Promise<SimFault> {
    const fault: SimFault = {
      id: randomUUID(),
      operation: input.operation,
      instanceId: input.instanceId ?? null,
      mode: input.mode,
      message: input.message || DEFAULT_MESSAGE[input.mode],
      remaining: input.times ?? 1,
      createdAt: new Date(),
    };
    await this.tx.run((em) => em.insert(SimFault, fault));
    return fault;
  }

  /** Armed faults, once on disk (`TransactionRunner.read`), as every API read. */
  list(): Promise<SimFault[]> {
    return this.tx.read(() => this.faults.find({ order: { createdAt: 'ASC' } }));
  }

  async disarm(id: string): Promise<void> {
    const result = await this.tx.run((em) => em.delete(SimFault, { id }));
    if (!result.affected) throw DomainError.notFound('Fault');
  }

  /** The simulated cloud's VMs, once on disk: its writes answer before they are. */
  listVms(instanceId?: string): Promise<SimVm[]> {
    return this.tx.read(() =>
      this.vms.find({ where: instanceId ? { instanceId } : {}, order: { createdAt: 'ASC' } }),
    );
  }

  /**
   * Whether any fault is armed for `operation`, as an SQL expression for a statement that reads
   * something else too (its values appended to `parameters`); true or 1 when one is.
   */
  armedInto(operation: SimOperation, parameters: unknown[]): string {
    return this.armed.existsInto({ operation }, parameters);
  }

  /**
   * Takes one hit from the first armed fault that matches, the instance's own before any
   * instance's. The decrement is conditional, so concurrent operations never share a hit.
   * `armed` is what an `armedInto` read beside the caller's own just said; without it, this
   * finds out first.
   */
  async consume(
    operation: SimOperation,
    instanceId: string,
    armed?: boolean,
  ): Promise<SimFault | null> {
    // Most operations meet no fault: find that out without taking the write lock.
    if (armed === false) return null;
    if (
      armed === undefined &&
      !(await this.tx.read(() => this.armed.findOne(this.dataSource.manager, { operation }), {
        durable: false,
      }))
    ) {
      return null;
    }
    return this.tx.run(async (em) => {
      const candidates = await em
        .createQueryBuilder(SimFault, 'f')
        .where('f.operation = :operation', { operation })
        .andWhere('(f.instance_id = :instanceId OR f.instance_id IS NULL)', { instanceId })
        .andWhere('f.remaining > 0')
        .orderBy('CASE WHEN f.instance_id IS NULL THEN 1 ELSE 0 END', 'ASC')
        .addOrderBy('f.created_at', 'ASC')
        .limit(5)
        .getMany();
      for (const fault of candidates) {
        const hit = await em
          .createQueryBuilder()
          .update(SimFault)
          .set({ remaining: () => 'remaining - 1' })
          .where('id = :id AND remaining > 0', { id: fault.id })
          .execute();
        if (hit.affected === 1) {
          await em.delete(SimFault, { id: fault.id, remaining: 0 });
          return fault;
        }
      }
      return null;
    });
  }
}
