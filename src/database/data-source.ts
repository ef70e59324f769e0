import 'reflect-metadata';
import { DataSource } from 'typeorm';
import { AppConfig } from '../config/app-config';
import { validateEnvironment } from '../config/environment';
import { dataSourceOptions } from './data-source-options';

/** For the TypeORM CLI (`npm run migration:generate -- src/database/migrations/Name`). */
export default new DataSource({
  ...dataSourceOptions(new AppConfig(validateEnvironment(process.env))),
  entities: [__dirname + '/../**/*.entity.{ts,js}'],
  migrationsRun: false,
});
