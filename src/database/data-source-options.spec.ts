import { AppConfig } from '../config/app-config';
import { validateEnvironment } from '../config/environment';
import { dataSourceOptions } from './data-source-options';

describe('dataSourceOptions', () => {
  const postgres = (env: Record<string, string>, processEnv: NodeJS.ProcessEnv = {}) =>
    dataSourceOptions(
      new AppConfig(
        validateEnvironment({ DATABASE_URL: 'postgres://db.example/provisor', ...env }),
      ),
      processEnv,
    );

  it('opens at most DATABASE_POOL_SIZE PostgreSQL connections, 6 unless set', () => {
    expect(postgres({})).toMatchObject({ type: 'postgres', poolSize: 6 });
    expect(postgres({ DATABASE_POOL_SIZE: '20' })).toMatchObject({ poolSize: 20 });
  });

  it("starts PostgreSQL sessions with Provisor's planner costs, then the operator's PGOPTIONS", () => {
    expect(postgres({})).toMatchObject({ extra: { options: '-c random_page_cost=1.1' } });
    expect(postgres({}, { PGOPTIONS: '-c random_page_cost=4 -c work_mem=8MB' })).toMatchObject({
      extra: { options: '-c random_page_cost=1.1 -c random_page_cost=4 -c work_mem=8MB' },
    });
  });
});
