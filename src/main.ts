import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { NestExpressApplication } from '@nestjs/platform-express';
import { AppModule } from './app.module';
import { configureApp } from './app.setup';
import { AppConfig } from './config/app-config';

async function bootstrap(): Promise<void> {
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

bootstrap().catch((error: Error) => {
  // A bad configuration is a message for a person, not a stack trace.
  console.error(error.message.startsWith('Invalid configuration') ? error.message : error);
  process.exit(1);
});
