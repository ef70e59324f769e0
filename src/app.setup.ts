import {
  BadRequestException,
  INestApplication,
  ValidationError,
  ValidationPipe,
} from '@nestjs/common';
import { FastifyAdapter, NestFastifyApplication } from '@nestjs/platform-fastify';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { BODY_LIMIT_BYTES } from './common/body-limit';
import { endWithError, toErrorBody } from './common/all-exceptions.filter';
import { serverWithBaseHeaders } from './common/base-headers.server';
import { inspectBody } from './common/inspect-body.hook';
import { isUnder } from './common/routes';
import { registerJsonBody } from './common/json-body.parser';
import { AppConfig } from './config/app-config';
import { DASHBOARD_ROUTE } from './dashboard/dashboard.module';
import { requestIdOf } from './logging/logging.module';

/** Swagger UI's path, and with `-json` its document's. */
const DOCS_PATH = 'api/docs';

/**
 * The HTTP server: Fastify, under Nest (a bare request costs less than half the CPU it did under
 * Express; README, Performance). Request ids are Provisor's own (`requestIdOf`).
 */
export function createHttpAdapter(): FastifyAdapter {
  return new FastifyAdapter({
    bodyLimit: BODY_LIMIT_BYTES,
    genReqId: requestIdOf,
    routerOptions: {
      // Paths match as they did under Express: with or without a trailing slash, in any case.
      ignoreTrailingSlash: true,
      caseSensitive: false,
      // No limit on a path parameter's length short of Node's on the request line: an id of any
      // length that is not a UUID is a 400, as API.md says, never Fastify's 404 for a long one.
      maxParamLength: 65_536,
    },
    // Node's own default, which Fastify turns off: a client that never finishes sending its
    // request is cut off after five minutes instead of holding a socket for ever.
    requestTimeout: 300_000,
    // A path Fastify cannot decode (`%zz`) is refused before routing, so before Nest's filters:
    // answered here in the API's error shape.
    frameworkErrors: (error: Error, _request: FastifyRequest, reply: FastifyReply) =>
      void reply.code(400).send(toErrorBody(new BadRequestException(error.message))),
    serverFactory: serverWithBaseHeaders,
  });
}

/**
 * Everything `main.ts` does to the app before it listens, shared with the e2e tests so that they
 * run the same HTTP stack users meet.
 */
export function configureApp(app: NestFastifyApplication): void {
  const config = app.get(AppConfig);
  const fastify = app.getHttpAdapter().getInstance();
  configureCors(app, config);
  registerJsonBody(fastify);
  // Bodies are read on every method, GET included, so that no route takes an unreadable one.
  for (const method of ['GET', 'HEAD']) {
    fastify.addHttpMethod(method, { hasBody: true, overrideExisting: true });
  }
  // The dashboard and Swagger UI are served beside Nest's routes, so no guard of the API's answers
  // a body they refuse: they answer it at once. (The one other route outside Nest, CORS's
  // preflight when CORS_ORIGINS is set, reads no body.)
  const besideNest = [
    DASHBOARD_ROUTE,
    ...['', '-json', '-yaml'].map((end) => `/${DOCS_PATH}${end}`),
  ];
  fastify.addHook(
    'preValidation',
    inspectBody((route) => besideNest.some((root) => isUnder(route, root))),
  );
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
    app.use((req: IncomingMessage, res: ServerResponse, next: () => void) => {
      const path = (req.url ?? '').split('?')[0].replace(/\/+$/, '');
      if (path === '/api/health' || path === '/metrics') return next();
      endWithError(res, {
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
function configureCors(app: NestFastifyApplication, config: AppConfig): void {
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
    // Every method the API has (the CORS plugin's default is GET, HEAD and POST only).
    methods: ['GET', 'HEAD', 'PUT', 'PATCH', 'POST', 'DELETE'],
    // An OPTIONS request without the preflight headers is answered as a preflight (204), as
    // Express's CORS middleware did, not refused with a 400.
    strictPreflight: false,
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
  SwaggerModule.setup(DOCS_PATH, app, document, {
    jsonDocumentUrl: `${DOCS_PATH}-json`,
    customSiteTitle: 'Provisor API',
    swaggerOptions: { persistAuthorization: true },
  });
}

function messagesOf(error: ValidationError): string[] {
  return [...Object.values(error.constraints ?? {}), ...(error.children ?? []).flatMap(messagesOf)];
}
