import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { IncomingHttpHeaders } from 'node:http';
import { brotliDecompressSync, gunzipSync, inflateSync } from 'node:zlib';
import { BODY_LIMIT_BYTES } from './body-limit';

/** A body that cannot be read as the API's JSON: the client's fault, answered with its status. */
export class BodyError extends Error {
  constructor(
    readonly statusCode: 400 | 413 | 415,
    message: string,
  ) {
    super(message);
    this.name = 'BodyError';
  }
}

const DECODERS: Record<string, (body: Buffer, options: { maxOutputLength: number }) => Buffer> = {
  gzip: gunzipSync,
  'x-gzip': gunzipSync,
  deflate: inflateSync,
  br: brotliDecompressSync,
};

/** Where a request keeps the refusal of its body until the caller is known (`refuseBody`). */
const REFUSAL = Symbol('provisor.bodyRefusal');

/**
 * Marks the request's body as refused, and leaves it none: the route's guards, which know who is
 * asking, answer with the refusal once they let the request through (`BodyRefusalGuard`), so
 * that a caller with no token hears `401` and a non-staff caller of a staff-only route `403`
 * (API.md section 4: "before anything else is checked"), whatever the body. The first refusal
 * counts.
 */
export function refuseBody(request: FastifyRequest, refusal: BodyError): void {
  const holder = request as FastifyRequest & { [REFUSAL]?: BodyError };
  holder[REFUSAL] ??= refusal;
  request.body = undefined;
}

/** The refusal `refuseBody` kept for the request, if any. */
export function bodyRefusalOf(request: object): BodyError | undefined {
  return (request as { [REFUSAL]?: BodyError })[REFUSAL];
}

/**
 * The one body parser: `application/json` in UTF-8, an object or an array, plain or compressed
 * (gzip, deflate, br), at most `BODY_LIMIT_BYTES` on the wire and once inflated. An empty body
 * is no body, as it is for a client that sets the content type on every request, whatever the
 * type. A body of any other media type (or of none) is refused with `415` unread; Fastify's own
 * `text/plain` parser goes, so that no route of the API ever sees a body that is not JSON.
 *
 * Refusals wait for the caller to be known (`refuseBody`), but for a body over the limit on the
 * wire: Fastify answers that `413` itself, without reading the rest. An answer given while part
 * of the body is still on the wire closes the connection, so the client cannot make the server
 * read what it has no use for.
 */
export function registerJsonBody(fastify: FastifyInstance): void {
  fastify.removeAllContentTypeParsers();
  fastify.addContentTypeParser(
    'application/json',
    { parseAs: 'buffer', bodyLimit: BODY_LIMIT_BYTES },
    (request, body, done) => {
      try {
        done(null, parseJsonBody(request.headers, body as Buffer));
      } catch (error) {
        if (!(error instanceof BodyError)) return done(error as Error, undefined);
        refuseBody(request, error);
        done(null, undefined);
      }
    },
  );
  fastify.addContentTypeParser('*', (request, _payload, done) => {
    if (hasBody(request)) refuseBody(request, notJson());
    done(null, undefined);
  });
  // Node reads an answered request's unread body to its end, to keep the connection for the
  // next request: the client's to send, until the request timeout. Fastify closes the connection
  // after the refusals it answers itself; this does the same for every other answer.
  fastify.addHook('onSend', (request, reply, _payload, done) => {
    if (!request.raw.complete) void reply.header('connection', 'close');
    done();
  });
}

/** Whether the request says a body follows: a length above zero, or a chunked one. */
function hasBody(request: FastifyRequest): boolean {
  const length = request.headers['content-length'];
  return (
    (length !== undefined && length !== '0') || request.headers['transfer-encoding'] !== undefined
  );
}

export function notJson(): BodyError {
  return new BodyError(415, 'Send the request body as JSON, with Content-Type: application/json');
}

export function parseJsonBody(headers: IncomingHttpHeaders, raw: Buffer): unknown {
  const charset = /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(headers['content-type'] ?? '')?.[1];
  if (charset && !/^utf-?8$/i.test(charset)) {
    throw new BodyError(415, `Unsupported body encoding: send JSON in UTF-8, not ${charset}`);
  }
  const text = inflate(headers['content-encoding'], raw).toString('utf8').trim();
  if (text === '') return undefined;
  // An object or an array: a bare string, number or null is no body of this API.
  if (text[0] !== '{' && text[0] !== '[') throw malformed();
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw malformed();
  }
}

function inflate(encoding: string | undefined, raw: Buffer): Buffer {
  const name = (encoding ?? 'identity').trim().toLowerCase();
  if (name === 'identity' || name === '') return raw;
  const decode = DECODERS[name];
  if (!decode) throw new BodyError(415, `Unsupported body encoding: ${name}`);
  try {
    return decode(raw, { maxOutputLength: BODY_LIMIT_BYTES });
  } catch (error) {
    if ((error as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') throw tooLarge();
    throw new BodyError(400, 'The request body could not be read (bad encoding or compression)');
  }
}

function malformed(): BodyError {
  return new BodyError(400, 'Malformed JSON in request body');
}

export function tooLarge(): BodyError {
  return new BodyError(413, `Request body is larger than the limit of ${BODY_LIMIT_BYTES} bytes`);
}
