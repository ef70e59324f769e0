import type { ArgumentsHost } from '@nestjs/common';
import { BadRequestException, HttpException, Logger } from '@nestjs/common';
import { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import { AllExceptionsFilter } from './all-exceptions.filter';

/**
 * A host whose raw request has pino-http's `req.log`, or none, and a Fastify reply that records.
 */
function hostWith(requestLog?: { child: jest.Mock }) {
  const response = {
    sent: false,
    raw: { headersSent: false },
    status: jest.fn().mockReturnThis(),
    type: jest.fn().mockReturnThis(),
    send: jest.fn().mockReturnThis(),
  };
  const host = {
    switchToHttp: () => ({
      getRequest: () => ({ raw: requestLog ? { log: requestLog } : {} }),
      getResponse: () => response,
    }),
  } as unknown as ArgumentsHost;
  return { host, response };
}

describe('AllExceptionsFilter', () => {
  it("logs an unexpected error's stack on the request's own logger, and answers a bare 500", () => {
    const bound = { error: jest.fn() };
    const requestLog = { child: jest.fn().mockReturnValue(bound) };
    const { host, response } = hostWith(requestLog);

    new AllExceptionsFilter().catch(new Error('disk on fire'), host);

    expect(requestLog.child).toHaveBeenCalledWith({ context: 'HttpErrors' });
    expect(bound.error).toHaveBeenCalledWith(expect.stringContaining('Error: disk on fire\n'));
    expect(response.status).toHaveBeenCalledWith(500);
    expect(response.type).toHaveBeenCalledWith('application/json; charset=utf-8');
    expect(response.send).toHaveBeenCalledWith({
      statusCode: 500,
      error: 'Internal Server Error',
      message: 'Internal server error',
    });
  });

  it("falls back to Nest's logger where the request has none", () => {
    const error = jest.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined);
    try {
      const { host, response } = hostWith();
      new AllExceptionsFilter().catch(new Error('no request logger'), host);
      expect(error).toHaveBeenCalledWith(expect.stringContaining('no request logger'));
      expect(response.status).toHaveBeenCalledWith(500);
    } finally {
      error.mockRestore();
    }
  });

  it("logs nothing for a client's mistake", () => {
    const requestLog = { child: jest.fn() };
    const { host, response } = hostWith(requestLog);
    new AllExceptionsFilter().catch(new BadRequestException('name must not be empty'), host);
    expect(requestLog.child).not.toHaveBeenCalled();
    expect(response.status).toHaveBeenCalledWith(400);
  });

  it('answers a request that could not be read with its 4xx, in words of the API', () => {
    const requestLog = { child: jest.fn() };
    const { host, response } = hostWith(requestLog);
    // What Node gives when a client goes away halfway through its body.
    const aborted = Object.assign(new Error('aborted'), { code: 'ECONNRESET', statusCode: 400 });
    new AllExceptionsFilter().catch(aborted, host);
    expect(requestLog.child).not.toHaveBeenCalled();
    expect(response.status).toHaveBeenCalledWith(400);
    expect(response.send).toHaveBeenCalledWith({
      statusCode: 400,
      error: 'Bad Request',
      message: 'The request could not be read',
    });
  });

  it("answers on Node's own response where a middleware threw", () => {
    const request = new IncomingMessage(new Socket());
    const response = new ServerResponse(request);
    const written: string[] = [];
    jest.spyOn(response, 'end').mockImplementation(((chunk: string) => {
      written.push(chunk);
      return response;
    }) as never);
    const host = {
      switchToHttp: () => ({ getRequest: () => request, getResponse: () => response }),
    } as unknown as ArgumentsHost;

    new AllExceptionsFilter().catch(new BadRequestException('bad header'), host);

    expect(response.statusCode).toBe(400);
    expect(response.getHeader('content-type')).toBe('application/json; charset=utf-8');
    expect(JSON.parse(written[0])).toEqual({
      statusCode: 400,
      error: 'Bad Request',
      message: 'bad header',
    });
  });

  it("logs a server fault Fastify reported, and answers it without Fastify's words", () => {
    const bound = { error: jest.fn() };
    const requestLog = { child: jest.fn().mockReturnValue(bound) };
    const { host, response } = hostWith(requestLog);
    // How Nest hands on a FastifyError such as FST_ERR_REP_INVALID_PAYLOAD_TYPE.
    const fault = new HttpException("Attempted to send payload of invalid type 'number'", 500);

    new AllExceptionsFilter().catch(fault, host);

    expect(bound.error).toHaveBeenCalledWith(expect.stringContaining('invalid type'));
    expect(response.status).toHaveBeenCalledWith(500);
    expect(response.send).toHaveBeenCalledWith({
      statusCode: 500,
      error: 'Internal Server Error',
      message: 'Internal server error',
    });
  });
});
