import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { NestExpressApplication } from '@nestjs/platform-express';
import { readEnvironment } from './config/environment';

async function bootstrap(): Promise<void> {
  try {
    readEnvironment();
  } catch (error) {
    // A bad configuration is a message for a person, not a stack trace.
    console.error((error as Error).message);
    process.exit(1);
  }
  // Loaded after the check: AppModule's imports read the environment as they load.
  const { AppModule } = await import('./app.module');
  const { configureApp } = await import('./app.setup');
  const { AppConfig } = await import('./config/app-config');

  const app = await NestFactory.create<NestExpressApplication>(AppModule, { bodyParser: false });
  configureApp(app);
  app.enableShutdownHooks();
  const config = app.get(AppConfig);
  await app.listen(config.port, config.host);
  new Logger('Provisor').log(
    `Listening on http://${config.host}:${config.port} as APP_ROLE=${config.role}` +
      (config.servesHttp ? ' (Swagger UI at /api/docs, queues at /admin/queues)' : ''),
  );
}

void bootstrap();
