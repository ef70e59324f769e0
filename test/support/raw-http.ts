import { request as httpRequest } from 'node:http';

/**
 * A request exactly as written: the path goes on the wire unnormalised (`..`, `%zz` and all),
 * headers may repeat, and the body is bytes. supertest and fetch tidy URLs and bodies up first,
 * which would hide the very inputs a fuzz test is after.
 */
export interface RawRequest {
  method: string;
  path: string;
  /** Sent in this order; a name given twice is sent as two header lines. */
  headers: [string, string][];
  body?: string | Buffer;
}

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  /** The body parsed as JSON, or `undefined` when it is not JSON. */
  json: unknown;
  /** The answer was an event stream, cut off after its headers. */
  streamed: boolean;
}

/** Sends `req` to the server on `port` and reads the whole answer (or an event stream's head). */
export function sendRaw(port: number, req: RawRequest, timeoutMs = 5_000): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const grouped = new Map<string, string[]>();
    for (const [name, value] of req.headers) {
      const key = name.toLowerCase();
      grouped.set(key, [...(grouped.get(key) ?? []), value]);
    }
    const outgoing = httpRequest({
      host: '127.0.0.1',
      port,
      method: req.method,
      path: req.path,
      agent: false,
      setHost: true,
    });
    // Node sends a DELETE's or GET's body with neither length nor chunking unless told its size.
    if (req.body !== undefined && !grouped.has('content-length'))
      grouped.set('content-length', [String(Buffer.byteLength(req.body))]);
    for (const [name, values] of grouped)
      outgoing.setHeader(name, values.length === 1 ? values[0] : values);
    const timer = setTimeout(() => {
      outgoing.destroy();
      reject(new Error(`${req.method} ${req.path} got no complete answer in ${timeoutMs} ms`));
    }, timeoutMs);
    outgoing.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    outgoing.on('response', (res) => {
      const status = res.statusCode ?? 0;
      if (String(res.headers['content-type']).startsWith('text/event-stream')) {
        clearTimeout(timer);
        res.destroy();
        outgoing.destroy();
        resolve({ status, headers: res.headers, text: '', json: undefined, streamed: true });
        return;
      }
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      res.on('end', () => {
        clearTimeout(timer);
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status, headers: res.headers, text, json, streamed: false });
      });
    });
    if (req.body !== undefined) outgoing.end(req.body);
    else outgoing.end();
  });
}
