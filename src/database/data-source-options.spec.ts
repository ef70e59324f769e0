import { AppConfig } from '../config/app-config';
import { validateEnvironment } from '../config/environment';
import { dataSourceOptions } from './data-source-options';

describe('dataSourceOptions', () => {
  const postgres = (env: Record<string, string>) =>
    dataSourceOptions(
      new AppConfig(
        validateEnvironment({ DATABASE_URL: 'postgres://db.example/provisor', ...env }),
      ),
    );

  it('opens at most DATABASE_POOL_SIZE PostgreSQL connections, 6 unless set', () => {
    expect(postgres({})).toMatchObject({ type: 'postgres', poolSize: 6 });
    expect(postgres({ DATABASE_POOL_SIZE: '20' })).toMatchObject({ poolSize: 20 });
  });
});
