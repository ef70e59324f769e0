import { validateEnvironment } from './environment';

describe('validateEnvironment', () => {
  it('gives every variable its documented default', () => {
    expect(validateEnvironment({})).toMatchObject({
      PORT: 3000,
      HOST: '127.0.0.1',
      DATABASE_URL: 'sqlite:data/provisor.sqlite',
      DATABASE_POOL_SIZE: 6,
      REDIS_URL: 'redis://127.0.0.1:6379',
      QUEUE_PREFIX: 'provisor',
      APP_ROLE: 'all',
      BACKEND_DRIVER: 'simulated',
      SIM_LATENCY_MS: 1000,
      JOB_TIMEOUT_MS: 60000,
      STUCK_AFTER_MS: 1800000,
      WORKER_CONCURRENCY: 10,
      JOB_LOCK_MS: 30000,
      SHUTDOWN_GRACE_MS: 15000,
      RATE_LIMIT_PER_MINUTE: 300000,
    });
    expect(validateEnvironment({}).CORS_ORIGINS).toBeUndefined();
  });

  it('reads numbers from strings and ignores variables that are not its own', () => {
    const env = validateEnvironment({ PORT: '8080', SIM_LATENCY_MS: '0', HOME: '/root' });
    expect(env.PORT).toBe(8080);
    expect(env.SIM_LATENCY_MS).toBe(0);
    expect(env).not.toHaveProperty('HOME');
  });

  it.each([
    ['PORT', '70000'],
    ['PORT', 'eighty'],
    ['SIM_LATENCY_MS', '-1'],
    ['JOB_TIMEOUT_MS', '1.5'],
    ['WORKER_CONCURRENCY', '0'],
    ['APP_ROLE', 'scheduler'],
    ['BACKEND_DRIVER', 'openstack'],
    ['DATABASE_URL', 'mysql://x'],
    ['DATABASE_POOL_SIZE', '1'],
    ['DATABASE_POOL_SIZE', '101'],
    ['REDIS_URL', 'localhost:6379'],
    ['QUEUE_PREFIX', 'has space'],
    ['SHUTDOWN_GRACE_MS', '30000'],
    ['JOB_LOCK_MS', '10'],
    ['RATE_LIMIT_PER_MINUTE', '-5'],
    ['CORS_ORIGINS', 'console.example.com'],
    ['CORS_ORIGINS', 'https://a.example/path'],
  ])('refuses %s=%s with a message naming the variable and the value', (name, value) => {
    expect(() => validateEnvironment({ [name]: value })).toThrow(
      new RegExp(
        `Invalid configuration:[\\s\\S]*${name}[\\s\\S]*got '${value.replace('.', '\\.')}'`,
      ),
    );
  });

  it('reads CORS_ORIGINS as * or a list of origins', () => {
    expect(validateEnvironment({ CORS_ORIGINS: '*' }).CORS_ORIGINS).toBe('*');
    const list = 'https://console.example.com, http://localhost:5173';
    expect(validateEnvironment({ CORS_ORIGINS: list }).CORS_ORIGINS).toBe(list);
  });

  it('never echoes ADMIN_TOKEN', () => {
    expect(() => validateEnvironment({ ADMIN_TOKEN: 'short-secret' })).toThrow(
      /ADMIN_TOKEN must be at least 16/,
    );
    expect(() => validateEnvironment({ ADMIN_TOKEN: 'short-secret' })).not.toThrow(/short-secret/);
  });

  it('refuses split roles on SQLite, and allows them on PostgreSQL', () => {
    expect(() => validateEnvironment({ APP_ROLE: 'worker' })).toThrow(
      /APP_ROLE=worker needs PostgreSQL/,
    );
    expect(
      validateEnvironment({ APP_ROLE: 'worker', DATABASE_URL: 'postgres://u@127.0.0.1:5432/db' })
        .APP_ROLE,
    ).toBe('worker');
  });
});
