import { Injectable, Logger, OnApplicationBootstrap } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { QueryFailedError, Repository } from 'typeorm';
import { DomainError, DomainErrorCode } from '../common/domain-error';
import { AppConfig } from '../config/app-config';
import { TransactionRunner } from '../database/transaction-runner';
import type { Actor } from './actor';
import { User } from './user.entity';

export const ADMIN_USERNAME = 'admin';

/**
 * How long a known token is taken on trust without asking the database again. Tokens never
 * change but through ADMIN_TOKEN at a restart, which other processes then see within this time.
 */
const TOKEN_CACHE_MS = 30_000;
const TOKEN_CACHE_SIZE = 10_000;

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

@Injectable()
export class UsersService implements OnApplicationBootstrap {
  private readonly logger = new Logger(UsersService.name);
  /** Known tokens by hash, oldest first; unknown ones are never kept (they would be anyone's). */
  private readonly known = new Map<string, { actor: Actor; until: number }>();

  constructor(
    @InjectRepository(User) private readonly users: Repository<User>,
    private readonly tx: TransactionRunner,
    private readonly config: AppConfig,
  ) {}

  /** `ADMIN_TOKEN` makes sure a staff user `admin` exists with that token. */
  async onApplicationBootstrap(): Promise<void> {
    const token = this.config.adminToken;
    if (!token) {
      if (this.config.servesHttp && !(await this.users.existsBy({ isStaff: true }))) {
        this.logger.warn(
          'No staff user exists, so nobody can sign in: set ADMIN_TOKEN (16+ characters) to ' +
            "create the staff user 'admin' with that token",
        );
      }
      return;
    }
    await this.tx.run(async (em) => {
      const existing = await em.findOneBy(User, { username: ADMIN_USERNAME });
      if (existing) {
        await em.update(User, { id: existing.id }, { tokenHash: hashToken(token), isStaff: true });
      } else {
        await em.insert(User, {
          id: randomUUID(),
          username: ADMIN_USERNAME,
          isStaff: true,
          tokenHash: hashToken(token),
          createdAt: new Date(),
        });
      }
    });
    this.logger.log(`Staff user '${ADMIN_USERNAME}' has the token from ADMIN_TOKEN`);
  }

  async authenticate(token: string): Promise<Actor | null> {
    const tokenHash = hashToken(token);
    const now = Date.now();
    const cached = this.known.get(tokenHash);
    if (cached && cached.until > now) return cached.actor;
    const user = await this.tx.read(() => this.users.findOneBy({ tokenHash }));
    this.known.delete(tokenHash);
    if (!user) return null;
    const actor: Actor = { id: user.id, username: user.username, isStaff: user.isStaff };
    if (this.known.size >= TOKEN_CACHE_SIZE) this.known.delete(this.known.keys().next().value!);
    this.known.set(tokenHash, { actor, until: now + TOKEN_CACHE_MS });
    return actor;
  }

  /** HTTP Basic for the dashboard: a staff user's username and API token. */
  async authenticateStaff(username: string, token: string): Promise<Actor | null> {
    const actor = await this.authenticate(token);
    return actor && actor.isStaff && actor.username === username ? actor : null;
  }

  async create(username: string, isStaff: boolean): Promise<{ user: User; token: string }> {
    const token = `pvs_${randomBytes(32).toString('base64url')}`;
    const user: User = {
      id: randomUUID(),
      username,
      isStaff,
      tokenHash: hashToken(token),
      createdAt: new Date(),
    };
    try {
      await this.tx.run(async (em) => {
        if (await em.existsBy(User, { username })) throw taken(username);
        await em.insert(User, user);
      });
    } catch (error) {
      // Two requests for one name at once: the unique index decides.
      if (error instanceof QueryFailedError) throw taken(username);
      throw error;
    }
    return { user, token };
  }
}

function taken(username: string): DomainError {
  return new DomainError(DomainErrorCode.Conflict, `Username '${username}' is already taken`);
}
