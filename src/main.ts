import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { Logger as PinoLogger } from 'nestjs-pino';
import { readEnvironment } from './config/environment';

/** Within the 30 s a container runtime grants by default after SIGTERM. */
const SHUTDOWN_DEADLINE_MS = 25_000;

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
  const { configureApp, createHttpAdapter } = await import('./app.setup');
  const { AppConfig } = await import('./config/app-config');

  const app = await NestFactory.create<NestFastifyApplication>(AppModule, createHttpAdapter(), {
    bodyParser: false,
    bufferLogs: true,
  });
  app.useLogger(app.get(PinoLogger));
  configureApp(app);
  app.enableShutdownHooks();
  // Closing waits for running jobs and for Redis; if either never answers, do not hang forever.
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => setTimeout(() => process.exit(1), SHUTDOWN_DEADLINE_MS).unref());
  }
  const config = app.get(AppConfig);
  await app.listen(config.port, config.host);
  new Logger('Provisor').log(
    `Listening on http://${config.host}:${config.port} as APP_ROLE=${config.role}` +
      (config.servesHttp ? ' (Swagger UI at /api/docs, queues at /admin/queues)' : ''),
  );
}

void bootstrap();
