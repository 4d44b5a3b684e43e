// Browser test of the web UI against a real Caracal, in Debian's Chromium via playwright-core.
//
//   node --test ui/tests/
//
// With CARACAL_UI_URL set (e.g. http://127.0.0.1:8080) it uses that Caracal, and posts
// its spans to CARACAL_OTLP_URL (default: the same host, port 4318). Without it, it builds
// the UI (scripts/build-ui.sh, instant when current), starts `caracal up` from CARACAL_BIN
// (default target/debug/caracal) on free ports with its own ClickHouse database, and
// drops that database at the end. ClickHouse must be running (deploy/clickhouse.sh start).
// Screenshots go to ui/tests/screenshots/.

import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { checkoutTrace, hex, postOtlp } from './seed.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '..', '..');
const SCREENSHOTS = join(HERE, 'screenshots');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const CLICKHOUSE_URL = (process.env.CARACAL_CLICKHOUSE_URL ?? 'http://127.0.0.1:8123').replace(/\/$/, '');

const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

/** Polls `check` until it returns a truthy value or `timeoutMs` passes. */
async function eventually(what, check, timeoutMs = 30_000, intervalMs = 250) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      lastError = error;
    }
    await sleep(intervalMs);
  }
  throw new Error(`timed out waiting for ${what}${lastError ? `: ${lastError.message}` : ''}`);
}

/** `count` distinct free TCP ports on 127.0.0.1. */
async function freePorts(count) {
  const servers = await Promise.all(
    Array.from({ length: count }, () => new Promise((done, fail) => {
      const server = createServer();
      server.once('error', fail);
      server.listen(0, '127.0.0.1', () => done(server));
    })),
  );
  const ports = servers.map((server) => server.address().port);
  await Promise.all(servers.map((server) => new Promise((done) => server.close(done))));
  return ports;
}

/** Starts `caracal up` on free ports with its own database and spool (plus `extraEnv`);
 * returns its URLs and a stop function. */
async function startCaracal(extraEnv = {}) {
  const ping = await fetch(`${CLICKHOUSE_URL}/ping`).catch(() => null);
  assert.ok(ping?.ok, `ClickHouse does not answer at ${CLICKHOUSE_URL}; start it with deploy/clickhouse.sh start`);
  execFileSync(join(REPO, 'scripts', 'build-ui.sh'), { stdio: 'inherit' });
  const binary = resolve(REPO, process.env.CARACAL_BIN ?? 'target/debug/caracal');
  assert.ok(existsSync(binary), `no caracal binary at ${binary}; run cargo build (or set CARACAL_BIN)`);
  const [http, grpc, otlpHttp, zipkin] = await freePorts(4);
  const database = `ui_test_${process.pid}_${hex(3)}`;
  const spoolDir = mkdtempSync(join(tmpdir(), 'caracal-ui-spool-'));
  const child = spawn(binary, ['up'], {
    cwd: REPO,
    env: {
      ...process.env,
      CARACAL_HTTP_ADDR: `127.0.0.1:${http}`,
      CARACAL_OTLP_GRPC_ADDR: `127.0.0.1:${grpc}`,
      CARACAL_OTLP_HTTP_ADDR: `127.0.0.1:${otlpHttp}`,
      CARACAL_ZIPKIN_ADDR: `127.0.0.1:${zipkin}`,
      CARACAL_CLICKHOUSE_URL: CLICKHOUSE_URL,
      CARACAL_CLICKHOUSE_DATABASE: database,
      CARACAL_UI_DIR: join(REPO, 'ui', 'dist'),
      CARACAL_SPOOL_DIR: spoolDir,
      ...extraEnv,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  const keep = (chunk) => {
    log = (log + chunk.toString()).slice(-20_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let exited = null;
  const exit = new Promise((done) => child.once('exit', (code, signal) => {
    exited = { code, signal };
    done(exited);
  }));
  const baseUrl = `http://127.0.0.1:${http}`;
  try {
    await eventually('caracal /healthz', async () => {
      if (exited) throw new Error(`caracal exited (${JSON.stringify(exited)})`);
      const response = await fetch(`${baseUrl}/healthz`);
      return response.status === 200;
    }, 90_000);
  } catch (error) {
    child.kill('SIGKILL');
    throw new Error(`${error.message}\n--- caracal log ---\n${log}`);
  }
  return {
    baseUrl,
    otlpUrl: `http://127.0.0.1:${otlpHttp}`,
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        let timer;
        const timeout = new Promise((done) => {
          timer = setTimeout(() => done(null), 10_000);
        });
        const stopped = await Promise.race([exit, timeout]);
        clearTimeout(timer);
        if (!stopped) {
          child.kill('SIGKILL');
          await exit;
        }
      }
      rmSync(spoolDir, { recursive: true, force: true });
      const response = await fetch(`${CLICKHOUSE_URL}/`, { method: 'POST', body: `DROP DATABASE IF EXISTS ${database}` });
      assert.ok(response.ok, `dropping ${database} failed: ${await response.text()}`);
    },
  };
}

async function getJson(url) {
  const response = await fetch(url);
  return { status: response.status, body: await response.json().catch(() => null) };
}

describe('Caracal web UI', { timeout: 240_000 }, () => {
  let caracal = null;
  let baseUrl;
  let browser;
  let page;
  let userDataDir;
  const pageErrors = [];
  const runTag = `ui-${process.pid}-${hex(4)}`;
  const canary = `canary-${runTag}`;
  let seeded;

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)`);
    mkdirSync(SCREENSHOTS, { recursive: true });
    let otlpUrl;
    if (process.env.CARACAL_UI_URL) {
      baseUrl = process.env.CARACAL_UI_URL.replace(/\/$/, '');
      otlpUrl = (process.env.CARACAL_OTLP_URL ?? `${new URL(baseUrl).protocol}//${new URL(baseUrl).hostname}:4318`).replace(/\/$/, '');
    } else {
      caracal = await startCaracal();
      baseUrl = caracal.baseUrl;
      otlpUrl = caracal.otlpUrl;
    }

    // The trace under test, plus a few earlier ones so the scatter plot has company.
    const now = Date.now();
    seeded = checkoutTrace({ startMs: now - 2_000, fail: true, runTag });
    await postOtlp(otlpUrl, seeded.body);
    for (let index = 1; index <= 5; index += 1) {
      const other = checkoutTrace({ startMs: now - index * 70_000, durationScale: 0.6 + index * 0.35, fail: index === 3 });
      await postOtlp(otlpUrl, other.body);
    }
    // One request served by a second instance of every service.
    await postOtlp(otlpUrl, checkoutTrace({ startMs: now - 30_000, fail: false, instance: canary }).body);
    await eventually('the seeded trace in the API', async () => {
      const { status, body } = await getJson(`${baseUrl}/api/traces/${seeded.traceId}`);
      return status === 200 && body.data[0].spans.length === seeded.spanCount;
    });
    await eventually('dependency edges in the API', async () => {
      const { body } = await getJson(`${baseUrl}/api/dependencies?endTs=${Date.now()}&lookback=3600000`);
      const edges = new Set((body?.data ?? []).map((edge) => `${edge.parent}>${edge.child}`));
      return ['frontend>orders', 'orders>payments', 'orders>postgresql'].every((edge) => edges.has(edge));
    });

    userDataDir = mkdtempSync(join(tmpdir(), 'caracal-ui-chromium-'));
    browser = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1440, height: 900 },
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
    page = browser.pages()[0] ?? (await browser.newPage());
    page.setDefaultTimeout(15_000);
    page.on('pageerror', (error) => pageErrors.push(error.message));
  });

  after(async () => {
    await browser?.close().catch(() => {});
    if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
    await caracal?.stop();
  });

  const shoot = async (name) => {
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
  };

  test('search finds the seeded trace', async () => {
    await page.goto(`${baseUrl}/`);
    const service = page.locator('select[name="service"]');
    await assert.doesNotReject(service.locator('option[value="frontend"]').waitFor({ state: 'attached' }));
    await service.selectOption('frontend');
    await page.locator('select[name="operation"] option[value="GET /checkout"]').waitFor({ state: 'attached' });
    await page.fill('input[name="tags"]', `test.run=${runTag}`);
    await page.click('button[type="submit"]');
    const result = page.locator(`.result[data-trace-id="${seeded.traceId}"]`);
    await result.waitFor();
    assert.equal(await page.locator('.result').count(), 1, 'the run tag matches exactly one trace');
    assert.match(await result.innerText(), /frontend/);
    assert.match(await result.innerText(), /GET \/checkout/);
    assert.match(await result.innerText(), /7 spans/);
    assert.match(await result.locator('.badge-error').innerText(), /2 errors/);
    assert.equal(await page.locator('svg.scatter circle.dot-error').count(), 1);
    assert.match(page.url(), /\/search\?.*service=frontend/);

    // Without the tag: every seeded trace, for the screenshot.
    await page.fill('input[name="tags"]', '');
    await page.click('button[type="submit"]');
    await eventually('all seeded traces listed', async () => (await page.locator('.result').count()) >= 6);
    await shoot('search');
  });

  test('search shows empty states and API errors', async () => {
    await page.goto(`${baseUrl}/search?service=frontend&tags=${encodeURIComponent(`test.run=${runTag}-none`)}`);
    await page.getByText('No traces found').waitFor();
    await page.goto(`${baseUrl}/search?service=frontend&minDuration=bogus`);
    const alert = page.locator('.state-error');
    await alert.waitFor();
    assert.match(await alert.innerText(), /minDuration.*is not a duration/);
    await page.fill('input[name="tags"]', 'novalue');
    await page.click('button[type="submit"]');
    assert.match(await page.locator('.form-error').innerText(), /"novalue" is not key=value/);
  });

  test('a custom time range finds the trace', async () => {
    const local = (ms) => new Date(ms - new Date(ms).getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
    await page.goto(`${baseUrl}/search`);
    await page.locator('select[name="service"] option[value="frontend"]').waitFor({ state: 'attached' });
    await page.selectOption('select[name="service"]', 'frontend');
    await page.fill('input[name="tags"]', `test.run=${runTag}`);
    await page.selectOption('select[name="lookback"]', 'custom');
    await page.fill('input[name="start"]', local(Date.now() - 10 * 60_000));
    await page.fill('input[name="end"]', local(Date.now() + 2 * 60_000));
    await page.click('button[type="submit"]');
    await page.locator(`.result[data-trace-id="${seeded.traceId}"]`).waitFor();
    // A range that ended before the trace finds nothing.
    await page.fill('input[name="end"]', local(Date.now() - 5 * 60_000));
    await page.click('button[type="submit"]');
    await page.getByText('No traces found').waitFor();
  });

  test('the trace view shows the waterfall and span details', async () => {
    await page.goto(`${baseUrl}/search?service=frontend&tags=${encodeURIComponent(`test.run=${runTag}`)}`);
    await page.locator(`.result[data-trace-id="${seeded.traceId}"]`).click();
    await page.waitForURL(`**/trace/${seeded.traceId}`);
    await page.locator('.wf-row').first().waitFor();
    assert.equal(await page.locator('.wf-row').count(), seeded.spanCount);
    assert.equal(await page.locator('[data-testid="trace-id"]').innerText(), seeded.traceId);
    const stats = await page.locator('.trace-header .stats').innerText();
    assert.match(stats, /SERVICES\s+3/i);
    assert.match(stats, /SPANS\s+7/i);
    assert.match(stats, /ERRORS\s+2/i);
    // Tree order: the root first, the database call under the orders server span.
    const names = await page.locator('.wf-row .wf-name').allInnerTexts();
    assert.match(names[0], /frontend.*GET \/checkout/s);
    assert.match(names[3], /orders.*SELECT orders/s);
    assert.equal(await page.locator('.wf-row-error').count(), 2);

    const dbRow = page.locator('.wf-row', { hasText: 'SELECT orders' });
    await dbRow.click();
    const details = page.locator('.wf-details');
    await details.waitFor();
    assert.equal(await details.locator('.span-tags tr[data-key="db.system"] td').innerText(), 'postgresql');
    assert.equal(await details.locator('.process-tags tr[data-key="service.name"] td').innerText(), 'orders');
    // The failing payment span: its error tag and its exception log.
    await page.locator('.wf-row', { hasText: 'payments' }).filter({ hasText: 'POST /charge' }).click();
    const payment = page.locator('.wf-details', { hasText: 'card processor unavailable' });
    await payment.waitFor();
    assert.equal(await payment.locator('.span-tags tr[data-key="error"] td').innerText(), 'true');
    assert.match(await payment.locator('.log-entry').innerText(), /exception/);
    await shoot('trace');

    // Collapsing the root hides the rest.
    await page.locator('.wf-row').first().locator('.wf-toggle').click();
    assert.equal(await page.locator('.wf-row').count(), 1);
  });

  test('an unknown trace shows not found', async () => {
    await page.goto(`${baseUrl}/trace/${'0'.repeat(31)}1`);
    await page.getByText('Trace not found').waitFor();
  });

  test('the dependencies page draws the service map', async () => {
    await page.goto(`${baseUrl}/dependencies`);
    await page.locator('svg.service-map .node').first().waitFor();
    for (const name of ['frontend', 'orders', 'payments']) {
      assert.equal(await page.locator(`.node[data-name="${name}"]`).getAttribute('data-kind'), 'service');
    }
    assert.equal(await page.locator('.node[data-name="postgresql"]').getAttribute('data-kind'), 'database');
    assert.ok((await page.locator('svg.service-map path.edge').count()) >= 3);
    assert.ok((await page.locator('svg.service-map path.edge-error[data-child="payments"]').count()) === 1);
    await shoot('dependencies');
  });

  test('the services page charts RED metrics', async () => {
    const card = page.locator('.service-card[data-service="frontend"]');
    await eventually('frontend metrics charted', async () => {
      await page.goto(`${baseUrl}/services`);
      await card.locator('.red-stats, .state-empty, .state-error').first().waitFor();
      return (await card.locator('svg.latency-chart path.series-line').count()) > 0;
    }, 30_000, 1_000);
    assert.equal(await card.locator('svg.latency-chart path.series-line').count(), 2);
    assert.ok((await card.locator('svg.count-chart rect.bar').count()) > 0);
    assert.match(await card.locator('.red-stats').innerText(), /P99/i);
    await shoot('services');
  });

  test('a service card narrows to one instance', async () => {
    const card = page.locator('.service-card[data-service="frontend"]');
    const select = card.locator('select.instance-select');
    await eventually('the canary instance listed', async () => {
      await page.goto(`${baseUrl}/services`);
      await card.locator('.red-stats').waitFor();
      await select.locator(`option[value="${canary}"]`).waitFor({ state: 'attached', timeout: 2_000 });
      return true;
    }, 30_000, 1_000);
    assert.ok(await select.isVisible());
    const names = await select.locator('option').evaluateAll((options) => options.map((option) => option.value));
    assert.ok(names.includes('') && names.includes('frontend-7f9c'), names.join(', '));
    const spans = () => card.locator('.red-stats .stat').first().locator('.stat-detail').innerText();
    await select.selectOption(canary);
    await eventually('the canary\'s one server span', async () => (await spans()) === '1 span');
    assert.equal(await card.locator('svg.latency-chart path.series-line').count(), 2);
    assert.match(await card.locator('svg.latency-chart').getAttribute('aria-label') ?? '', new RegExp(`frontend on ${canary}`));
    await shoot('services-instance');
    await select.selectOption('');
    await eventually('every instance again', async () => Number((await spans()).split(' ')[0]) >= 7);
  });

  test('no script errors on any page', () => {
    assert.deepEqual(pageErrors, []);
  });
});

describe('Caracal web UI with query tokens', { timeout: 120_000, skip: Boolean(process.env.CARACAL_UI_URL) }, () => {
  const ingestToken = `ingest-${hex(8)}`;
  const queryToken = `query-${hex(8)}`;
  let caracal;
  let browser;
  let userDataDir;

  before(async () => {
    caracal = await startCaracal({
      CARACAL_INGEST_TOKENS: `${ingestToken}=team-ui`,
      CARACAL_QUERY_TOKENS: `${queryToken}=team-ui`,
    });
    const seeded = checkoutTrace({ startMs: Date.now() - 2_000, fail: false, runTag: 'tokens' });
    await postOtlp(caracal.otlpUrl, seeded.body, ingestToken);
    await eventually('the tenant\'s service in the API', async () => {
      const response = await fetch(`${caracal.baseUrl}/api/services`, {
        headers: { Authorization: `Bearer ${queryToken}` },
      });
      return response.ok && (await response.json()).data.includes('frontend');
    });
    userDataDir = mkdtempSync(join(tmpdir(), 'caracal-ui-chromium-'));
    browser = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });

  after(async () => {
    await browser?.close().catch(() => {});
    if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
    await caracal?.stop();
  });

  test('asks for the query token, then shows the tenant\'s data', async () => {
    const page = browser.pages()[0] ?? (await browser.newPage());
    page.setDefaultTimeout(15_000);
    const { status } = await getJson(`${caracal.baseUrl}/api/services`);
    assert.equal(status, 401, 'the API refuses a request without a token');
    await page.goto(`${caracal.baseUrl}/`);
    const form = page.locator('form.token-form');
    await form.waitFor();
    await form.locator('input[name="token"]').fill(queryToken);
    await form.locator('button[type="submit"]').click();
    await page.locator('select[name="service"] option[value="frontend"]').waitFor({ state: 'attached' });
    await page.screenshot({ path: join(SCREENSHOTS, 'tokens.png') });
  });
});
