import { AppRole, BackendDriver, Environment, LogFormat, LogLevel } from './environment';

export type DatabaseKind = 'sqlite' | 'postgres';

/** Typed, validated configuration; the only view of the environment the rest of the code has. */
export class AppConfig {
  readonly port: number;
  readonly host: string;
  readonly databaseUrl: string;
  readonly databaseKind: DatabaseKind;
  /** PostgreSQL: the most connections this process opens. */
  readonly databasePoolSize: number;
  readonly redisUrl: string;
  readonly queuePrefix: string;
  readonly role: AppRole;
  readonly adminToken?: string;
  readonly metricsToken?: string;
  readonly logLevel: LogLevel;
  readonly logFormat: LogFormat;
  readonly backendDriver: BackendDriver;
  readonly simLatencyMs: number;
  readonly jobTimeoutMs: number;
  readonly stuckAfterMs: number;
  readonly workerConcurrency: number;
  readonly jobAttempts: number;
  readonly jobBackoffMs: number;
  readonly relayIntervalMs: number;
  readonly sweepIntervalMs: number;
  readonly jobLockMs: number;
  readonly shutdownGraceMs: number;
  /** Requests per minute per token; 0 turns the limit off. */
  readonly rateLimitPerMinute: number;
  /** Origins allowed to call the API from a browser; empty means CORS is off. */
  readonly corsOrigins: string[] | '*';

  constructor(env: Environment) {
    this.port = env.PORT;
    this.host = env.HOST;
    this.databaseUrl = env.DATABASE_URL;
    this.databaseKind = env.DATABASE_URL.startsWith('sqlite:') ? 'sqlite' : 'postgres';
    this.databasePoolSize = env.DATABASE_POOL_SIZE;
    this.redisUrl = env.REDIS_URL;
    this.queuePrefix = env.QUEUE_PREFIX;
    this.role = env.APP_ROLE;
    this.adminToken = env.ADMIN_TOKEN;
    this.metricsToken = env.METRICS_TOKEN;
    this.logLevel = env.LOG_LEVEL;
    this.logFormat = env.LOG_FORMAT;
    this.backendDriver = env.BACKEND_DRIVER;
    this.simLatencyMs = env.SIM_LATENCY_MS;
    this.jobTimeoutMs = env.JOB_TIMEOUT_MS;
    this.stuckAfterMs = env.STUCK_AFTER_MS;
    this.workerConcurrency = env.WORKER_CONCURRENCY;
    this.jobAttempts = env.JOB_ATTEMPTS;
    this.jobBackoffMs = env.JOB_BACKOFF_MS;
    this.relayIntervalMs = env.RELAY_INTERVAL_MS;
    this.sweepIntervalMs = env.SWEEP_INTERVAL_MS;
    this.jobLockMs = env.JOB_LOCK_MS;
    this.shutdownGraceMs = env.SHUTDOWN_GRACE_MS;
    this.rateLimitPerMinute = env.RATE_LIMIT_PER_MINUTE;
    this.corsOrigins =
      env.CORS_ORIGINS === '*'
        ? '*'
        : (env.CORS_ORIGINS ?? '')
            .split(',')
            .map((o) => o.trim())
            .filter(Boolean);
  }

  get servesHttp(): boolean {
    return this.role !== 'worker';
  }

  get runsWorkers(): boolean {
    return this.role !== 'api';
  }
}
