import {
  BadRequestException,
  INestApplication,
  ValidationError,
  ValidationPipe,
} from '@nestjs/common';
import { NestExpressApplication } from '@nestjs/platform-express';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import type { NextFunction, Request, Response } from 'express';
import helmet from 'helmet';
import { BODY_LIMIT_BYTES } from './common/body-limit';
import { inspectBody } from './common/inspect-body.middleware';
import { AppConfig } from './config/app-config';

/**
 * Everything `main.ts` does to the app before it listens, shared with the e2e tests so that they
 * run the same HTTP stack users meet.
 */
export function configureApp(app: NestExpressApplication): void {
  const config = app.get(AppConfig);
  app.disable('x-powered-by');
  // helmet's defaults: a same-origin content security policy, under which Swagger UI and the
  // queue dashboard still render (their scripts are files of their own; only styles are inline).
  app.use(helmet());
  configureCors(app, config);
  app.useBodyParser('json', { limit: BODY_LIMIT_BYTES });
  app.use(inspectBody);
  app.useGlobalPipes(
    new ValidationPipe({
      whitelist: true,
      forbidNonWhitelisted: true,
      forbidUnknownValues: true,
      transform: true,
      validationError: { target: false, value: false },
      // One line per distinct problem: two rules that say the same thing are said once.
      exceptionFactory: (errors) =>
        new BadRequestException([...new Set(errors.flatMap(messagesOf))]),
    }),
  );
  if (!config.servesHttp) {
    // APP_ROLE=worker answers health checks and metrics scrapes only.
    app.use((req: Request, res: Response, next: NextFunction) => {
      if (req.path === '/api/health' || req.path === '/metrics') return next();
      res.status(404).json({
        statusCode: 404,
        error: 'Not Found',
        message: 'This process is a worker; it serves /api/health and /metrics only',
      });
    });
    return;
  }
  setupSwagger(app);
}

/**
 * Off unless CORS_ORIGINS names the browser origins allowed to call the API. Tokens travel in the
 * Authorization header, never in cookies, so no origin gets credentials.
 */
function configureCors(app: NestExpressApplication, config: AppConfig): void {
  if (config.corsOrigins !== '*' && config.corsOrigins.length === 0) return;
  app.enableCors({
    origin: config.corsOrigins,
    allowedHeaders: [
      'Authorization',
      'Content-Type',
      'Idempotency-Key',
      'X-Request-Id',
      'Last-Event-ID',
    ],
    exposedHeaders: [
      'Retry-After',
      'X-Request-Id',
      'X-RateLimit-Limit',
      'X-RateLimit-Remaining',
      'X-RateLimit-Reset',
    ],
    maxAge: 600,
  });
}

export function setupSwagger(app: INestApplication): void {
  const document = SwaggerModule.createDocument(
    app,
    new DocumentBuilder()
      .setTitle('Provisor')
      .setDescription(
        'VM instances on a state machine. Actions answer `202` with the instance in a `*_scheduled` ' +
          'state; poll `GET /api/instances/{id}` or read `GET /api/events` to follow it.',
      )
      .setVersion('1')
      .addBearerAuth({
        type: 'http',
        scheme: 'bearer',
        bearerFormat: 'API token',
        description: 'An API token from POST /api/users or ADMIN_TOKEN',
      })
      .build(),
  );
  SwaggerModule.setup('api/docs', app, document, {
    jsonDocumentUrl: 'api/docs-json',
    customSiteTitle: 'Provisor API',
    swaggerOptions: { persistAuthorization: true },
  });
}

function messagesOf(error: ValidationError): string[] {
  return [...Object.values(error.constraints ?? {}), ...(error.children ?? []).flatMap(messagesOf)];
}
