import { existsSync } from 'node:fs';
import { plainToInstance, Transform } from 'class-transformer';
import {
  IsIn,
  IsInt,
  IsOptional,
  IsString,
  Matches,
  Max,
  MaxLength,
  Min,
  MinLength,
  validateSync,
} from 'class-validator';

export const APP_ROLES = ['all', 'api', 'worker'] as const;
export type AppRole = (typeof APP_ROLES)[number];
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ['json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];
export const BACKEND_DRIVERS = ['simulated'] as const;
export type BackendDriver = (typeof BACKEND_DRIVERS)[number];

const toInt = ({ value }: { value: unknown }) =>
  typeof value === 'string' && /^-?\d+$/.test(value.trim()) ? Number(value) : value;
const emptyToUndefined = ({ value }: { value: unknown }) => (value === '' ? undefined : value);

/**
 * The process environment as Provisor reads it. Every variable has a default that works on a
 * developer's machine; `.env.example` documents each one.
 */
export class Environment {
  @Transform(toInt)
  @Min(0)
  @Max(65535)
  @IsInt()
  PORT = 3000;

  @IsString()
  HOST = '127.0.0.1';

  @Matches(/^(sqlite:.+|postgres(ql)?:\/\/.+)$/, {
    message:
      'DATABASE_URL must be sqlite:PATH, sqlite::memory: or postgres://user:pass@host:port/db',
  })
  DATABASE_URL = 'sqlite:data/provisor.sqlite';

  @Matches(/^rediss?:\/\/.+/, { message: 'REDIS_URL must be a redis:// or rediss:// URL' })
  REDIS_URL = 'redis://127.0.0.1:6379';

  @Matches(/^[A-Za-z0-9_.:-]{1,64}$/, {
    message: 'QUEUE_PREFIX must be 1 to 64 letters, digits or _ . : -',
  })
  QUEUE_PREFIX = 'provisor';

  @IsIn(APP_ROLES, { message: `APP_ROLE must be one of: ${APP_ROLES.join(', ')}` })
  APP_ROLE: AppRole = 'all';

  @Transform(emptyToUndefined)
  @IsOptional()
  @IsString()
  @MinLength(16, { message: 'ADMIN_TOKEN must be at least 16 characters' })
  @MaxLength(256)
  ADMIN_TOKEN?: string;

  @Transform(emptyToUndefined)
  @IsOptional()
  @IsString()
  @MinLength(16, { message: 'METRICS_TOKEN must be at least 16 characters' })
  METRICS_TOKEN?: string;

  @IsIn(LOG_LEVELS, { message: `LOG_LEVEL must be one of: ${LOG_LEVELS.join(', ')}` })
  LOG_LEVEL: LogLevel = 'info';

  @IsIn(LOG_FORMATS, { message: `LOG_FORMAT must be one of: ${LOG_FORMATS.join(', ')}` })
  LOG_FORMAT: LogFormat = 'json';

  @IsIn(BACKEND_DRIVERS, {
    message: `BACKEND_DRIVER must be one of: ${BACKEND_DRIVERS.join(', ')}`,
  })
  BACKEND_DRIVER: BackendDriver = 'simulated';

  @Transform(toInt)
  @Min(0)
  @IsInt()
  SIM_LATENCY_MS = 1000;

  @Transform(toInt)
  @Min(1)
  @IsInt()
  JOB_TIMEOUT_MS = 60000;

  @Transform(toInt)
  @Min(1000)
  @IsInt()
  STUCK_AFTER_MS = 1800000;

  @Transform(toInt)
  @Min(1)
  @Max(1000)
  @IsInt()
  WORKER_CONCURRENCY = 10;

  /**
   * PostgreSQL: the most connections one process opens. At least two: the stuck sweeper holds
   * one (its advisory lock) while its transitions take another.
   */
  @Transform(toInt)
  @Min(2)
  @Max(100)
  @IsInt()
  DATABASE_POOL_SIZE = 6;

  @Transform(toInt)
  @Min(1)
  @Max(100)
  @IsInt()
  JOB_ATTEMPTS = 5;

  @Transform(toInt)
  @Min(1)
  @IsInt()
  JOB_BACKOFF_MS = 1000;

  @Transform(toInt)
  @Min(10)
  @IsInt()
  RELAY_INTERVAL_MS = 1000;

  @Transform(toInt)
  @Min(100)
  @IsInt()
  SWEEP_INTERVAL_MS = 60000;

  @Transform(toInt)
  @Min(1000)
  @IsInt()
  JOB_LOCK_MS = 30000;

  @Transform(toInt)
  @Min(0)
  @Max(20000)
  @IsInt()
  SHUTDOWN_GRACE_MS = 15000;

  @Transform(toInt)
  @Min(0)
  @IsInt()
  RATE_LIMIT_PER_MINUTE = 300000;

  @Transform(emptyToUndefined)
  @IsOptional()
  @Matches(/^(\*|https?:\/\/[^\s,/]+(,\s*https?:\/\/[^\s,/]+)*)$/, {
    message:
      'CORS_ORIGINS must be * or a comma-separated list of origins such as https://app.example.com',
  })
  CORS_ORIGINS?: string;
}

/**
 * Validates the raw environment once, at boot. Unknown variables are ignored (the process
 * environment holds far more than ours); a bad value of ours stops the start with a message
 * that names the variable.
 */
export function validateEnvironment(raw: Record<string, unknown>): Environment {
  const own = Object.fromEntries(
    Object.keys(new Environment())
      .concat('ADMIN_TOKEN', 'METRICS_TOKEN', 'CORS_ORIGINS')
      .filter((key) => raw[key] !== undefined)
      .map((key) => [key, raw[key]]),
  );
  const env = plainToInstance(Environment, own, { exposeDefaultValues: true });
  const errors = validateSync(env, { whitelist: true, stopAtFirstError: true });
  if (errors.length > 0) {
    const lines = errors.flatMap((e) =>
      Object.values(e.constraints ?? {}).map((line) =>
        e.property.endsWith('_TOKEN') ? line : `${line} (got '${String(raw[e.property])}')`,
      ),
    );
    throw new Error(`Invalid configuration:\n  - ${lines.join('\n  - ')}`);
  }
  if (env.APP_ROLE !== 'all' && env.DATABASE_URL.startsWith('sqlite:')) {
    throw new Error(
      `Invalid configuration:\n  - APP_ROLE=${env.APP_ROLE} needs PostgreSQL: SQLite is embedded ` +
        'in one process, so split roles cannot share it. Set DATABASE_URL=postgres://… or APP_ROLE=all',
    );
  }
  return env;
}

/**
 * For `main.ts`, before anything else loads: reads `.env` (the process environment wins over it)
 * and validates, so a bad value ends the start with the message alone.
 */
export function readEnvironment(envFile = '.env'): Environment {
  if (existsSync(envFile)) process.loadEnvFile(envFile);
  return validateEnvironment(process.env);
}
