import { Global, Module } from '@nestjs/common';
import { fdatasync } from 'node:fs';
import { TypeOrmModule } from '@nestjs/typeorm';
import { AppConfig } from '../config/app-config';
import { dataSourceOptions } from './data-source-options';
import { Statements } from './entity-statements';
import { TransactionRunner } from './transaction-runner';
import { SYNC_FILE } from './wal-sync';

@Global()
@Module({
  imports: [
    TypeOrmModule.forRootAsync({
      inject: [AppConfig],
      useFactory: (config: AppConfig) => ({
        ...dataSourceOptions(config),
        autoLoadEntities: true,
        retryAttempts: 3,
        retryDelay: 1000,
      }),
    }),
  ],
  providers: [TransactionRunner, Statements, { provide: SYNC_FILE, useValue: fdatasync }],
  exports: [TransactionRunner, Statements],
})
export class DatabaseModule {}
