import type TestAgent from 'supertest/lib/agent';

export const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });

export interface InstanceBody {
  id: string;
  name: string;
  state: string;
  flavor: string;
  error_message: string;
  error_traceback?: string;
  backend_id: string;
  owner_id: string;
  [key: string]: unknown;
}

/** A thin client over the HTTP API, for tests that speak as one user. */
export class ApiClient {
  constructor(
    readonly http: TestAgent,
    readonly token: string,
  ) {}

  get(path: string) {
    return this.http.get(path).set(bearer(this.token));
  }

  post(path: string, body?: object) {
    const req = this.http.post(path).set(bearer(this.token));
    return body === undefined ? req : req.send(body);
  }

  patch(path: string, body: object) {
    return this.http.patch(path).set(bearer(this.token)).send(body);
  }

  delete(path: string) {
    return this.http.delete(path).set(bearer(this.token));
  }

  async createUser(username: string, isStaff = false): Promise<ApiClient> {
    const res = await this.post('/api/users', { username, is_staff: isStaff }).expect(201);
    return new ApiClient(this.http, res.body.token);
  }

  async create(body: object = {}): Promise<InstanceBody> {
    const res = await this.post('/api/instances', { name: 'web-1', flavor: 'small', ...body });
    if (res.status !== 202)
      throw new Error(`create answered ${res.status}: ${JSON.stringify(res.body)}`);
    return res.body;
  }

  async action(id: string, action: string, body?: object): Promise<InstanceBody> {
    const res =
      action === 'delete'
        ? await this.delete(`/api/instances/${id}`)
        : await this.post(`/api/instances/${id}/${action}`, body);
    if (res.status !== 202)
      throw new Error(`${action} answered ${res.status}: ${JSON.stringify(res.body)}`);
    return res.body;
  }

  /** Polls the instance until it is in `state` (or gone, for `'gone'`). */
  async waitForState(id: string, state: string, timeoutMs = 15_000): Promise<InstanceBody> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < deadline) {
      const res = await this.get(`/api/instances/${id}`);
      if (state === 'gone' && res.status === 404) return res.body;
      if (res.status === 200 && res.body.state === state) return res.body;
      last = res.status === 200 ? res.body.state : `HTTP ${res.status}`;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(
      `instance ${id} did not reach '${state}' in ${timeoutMs} ms; last seen: ${last}`,
    );
  }

  /** Creates an instance and waits until it is online. */
  async online(body: object = {}): Promise<InstanceBody> {
    const created = await this.create(body);
    return this.waitForState(created.id, 'online');
  }

  async events(
    instanceId: string,
  ): Promise<{ id: number; type: string; state: string; error_message: string }[]> {
    const res = await this.get(`/api/events?instance_id=${instanceId}&limit=500`).expect(200);
    return res.body.items;
  }
}
