import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Browser, chromium, Page } from 'playwright-core';
import { ApiClient } from './support/api';
import { startApp, TestApp } from './support/test-app';

/**
 * Swagger UI and the queue dashboard in a real browser: Debian's Chromium, driven headless by
 * playwright-core (no browser download). CI installs Chromium; elsewhere the suite is skipped
 * when it is missing. Screenshots land in test-artifacts/.
 */
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const haveBrowser = existsSync(CHROMIUM);
if (!haveBrowser && process.env.CI) {
  throw new Error(`CI needs Chromium at ${CHROMIUM} for the browser tests (.ci/run installs it)`);
}
const ARTIFACTS = join(__dirname, '..', 'test-artifacts');

/** What the page's content security policy refused, as the browser reports it. */
function cspViolations(page: Page): string[] {
  const refused: string[] = [];
  page.on('console', (message) => {
    if (/Content Security Policy/i.test(message.text())) refused.push(message.text());
  });
  return refused;
}

(haveBrowser ? describe : describe.skip)('Swagger UI and the dashboard in a browser', () => {
  let t: TestApp;
  let base: string;
  let browser: Browser;

  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    t = await startApp({ SIM_LATENCY_MS: '300' });
    await t.app.listen(0, '127.0.0.1');
    base = await t.app.getUrl();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  });
  afterAll(async () => {
    await browser?.close();
    await t?.close();
  });

  it('creates an instance from Swagger UI after authorizing, and gets 202', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const refused = cspViolations(page);
    const docs = await page.goto(`${base}/api/docs`);
    expect(docs?.headers()['content-security-policy']).toContain("default-src 'self'");
    await page.waitForSelector('.swagger-ui .info');
    await page.click('button.authorize');
    await page.fill('.modal-ux input', t.adminToken);
    await page.click('.modal-ux button.authorize');
    await page.click('.modal-ux button.close-modal');

    const op = page.locator('#operations-instances-createInstance');
    await op.locator('.opblock-summary').click();
    await op.locator('button.try-out__btn').click();
    await op.locator('textarea.body-param__text').fill('{"name":"from-swagger","flavor":"small"}');
    await op.locator('button.execute').click();
    const status = op.locator('.live-responses-table tr.response .response-col_status').first();
    await status.waitFor();
    await op.screenshot({ path: join(ARTIFACTS, 'swagger-create-instance.png') });
    expect((await status.innerText()).trim()).toBe('202');
    expect(refused).toEqual([]);
    await page.close();

    const admin = new ApiClient(t.http, t.adminToken);
    const list = await admin.get('/api/instances?name=from-swagger').expect(200);
    expect(list.body.total).toBe(1);
    await admin.waitForState(list.body.items[0].id, 'online');
  });

  it('shows the queue and the finished job on the dashboard, behind basic auth', async () => {
    const anonymous = await browser.newContext();
    const denied = await anonymous.request.get(`${base}/admin/queues`);
    expect(denied.status()).toBe(401);
    expect(denied.headers()['www-authenticate']).toMatch(/^Basic/);
    await anonymous.close();

    const context = await browser.newContext({
      httpCredentials: { username: 'admin', password: t.adminToken },
      viewport: { width: 1280, height: 800 },
    });
    const page = await context.newPage();
    const refused = cspViolations(page);
    const dashboard = await page.goto(
      `${base}/admin/queues/queue/instance-operations?status=completed`,
    );
    expect(dashboard?.headers()['content-security-policy']).toContain("default-src 'self'");
    await page.getByText('instance-operations').first().waitFor();
    await page.getByText('provision', { exact: true }).first().waitFor();
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-completed-jobs.png') });
    expect(await page.getByText('"succeeded"').count()).toBeGreaterThan(0);
    expect(refused).toEqual([]);
    await context.close();
  });
});
