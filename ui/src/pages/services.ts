// Services: RED numbers and charts for every service over the last hour, for all its
// instances or one (CAT's per-machine view).

import { getInstances, getMetrics, getServices, isAbort, type Metrics } from '../api';
import { countChart, latencyChart, type Window } from '../charts/timeseries';
import { ERROR_COLOR, serviceColor } from '../colors';
import { empty, errorBox, h, option, replace, spinner } from '../dom';
import { formatCount, formatCountOf, formatDuration, formatHourMinute, formatPercent, formatRate } from '../format';
import type { PageContext } from '../router';

const STEP_SECONDS = 60;
const WINDOW_MS = 3_600_000;
const CONCURRENCY = 4;
const P99_COLOR = '#f0a040';

/** The last hour in whole steps, plus the current (partial) step. */
export function metricsWindow(now: number, stepSeconds = STEP_SECONDS, windowMs = WINDOW_MS): Window {
  const stepMs = stepSeconds * 1000;
  const aligned = Math.floor(now / stepMs) * stepMs;
  return { start: aligned - windowMs, end: aligned + stepMs, stepMs };
}

export async function servicesPage({ root, signal }: PageContext): Promise<void> {
  const now = Date.now();
  const window = metricsWindow(now);
  const grid = h('div', { class: 'service-grid' });
  replace(
    root,
    h(
      'div',
      { class: 'page-head' },
      h('h1', null, 'Services'),
      h('span', { class: 'muted' }, `Last hour, ${formatHourMinute(window.start)}–${formatHourMinute(now)}, 1-minute steps`),
    ),
    grid,
  );
  replace(grid, spinner('Loading services…'));
  let services: string[];
  try {
    services = (await getServices(signal)).sort((a, b) => a.localeCompare(b));
  } catch (error) {
    if (!isAbort(error)) replace(grid, errorBox(error));
    return;
  }
  if (services.length === 0) {
    replace(grid, empty('No services yet', 'Services appear once they send spans.'));
    return;
  }
  const cards = services.map((service) => serviceCard(service, window, now, signal));
  replace(grid, ...cards.map((card) => card.element));
  // A few at a time, so a long list does not flood the server.
  const queue = [...cards];
  const worker = async () => {
    for (let next = queue.shift(); next; next = queue.shift()) {
      if (signal.aborted) return;
      await Promise.all([next.load(), next.loadInstances()]);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
}

/** A service's card: its RED numbers and charts, for all instances or the one chosen. */
function serviceCard(service: string, window: Window, now: number, signal: AbortSignal) {
  const body = h('div', { class: 'service-body' }, spinner('Loading metrics…'));
  // Hidden until the service turns out to have named instances.
  const instanceSelect = h(
    'select',
    { class: 'instance-select', 'aria-label': `Instance of ${service}`, hidden: true },
    option('', 'All instances', true),
  );
  const element = h(
    'section',
    { class: 'panel service-card', 'data-service': service, style: `--service: ${serviceColor(service)}` },
    h(
      'header',
      { class: 'service-card-head' },
      h('h2', null, h('span', { class: 'service-name' }, service)),
      h(
        'div',
        { class: 'service-card-tools' },
        instanceSelect,
        h('a', { class: 'link-button', href: `/search?service=${encodeURIComponent(service)}&lookback=1h` }, 'Find traces →'),
      ),
    ),
    body,
  );
  // Only the latest choice's answer is shown.
  let latest = 0;
  const load = async () => {
    const request = ++latest;
    const instance = instanceSelect.value;
    replace(body, spinner('Loading metrics…'));
    try {
      const params = { service, instance, spanKind: 'server', start: window.start, end: window.end, step: STEP_SECONDS };
      const metrics = await getMetrics(params, signal);
      if (request === latest) showMetrics(body, service, instance, metrics, window, now);
    } catch (error) {
      if (!isAbort(error) && request === latest) replace(body, errorBox(error));
    }
  };
  instanceSelect.addEventListener('change', () => void load());
  const loadInstances = async () => {
    try {
      const instances = await getInstances({ service, start: window.start, end: window.end }, signal);
      instanceSelect.append(...instances.map(({ instance }) => option(instance, instance)));
      instanceSelect.hidden = instances.length === 0;
    } catch (error) {
      // The card still shows the whole service; only the choice of instance is missing.
      if (!isAbort(error)) instanceSelect.title = `Instances unavailable: ${String(error)}`;
    }
  };
  return { element, load, loadInstances };
}

function showMetrics(body: HTMLElement, service: string, instance: string, metrics: Metrics, window: Window, now: number): void {
  const { total } = metrics;
  if (total.count === 0) {
    replace(body, empty(instance ? `No spans from ${instance} in the last hour` : 'No spans in the last hour'));
    return;
  }
  const subject = instance ? `${service} on ${instance}` : service;
  const seconds = Math.max((now - window.start) / 1000, 1);
  const errorRate = total.errors / total.count;
  const p50 = new Map(metrics.series.map((point) => [point.ts, point.p50_us]));
  const p99 = new Map(metrics.series.map((point) => [point.ts, point.p99_us]));
  const counts = new Map(metrics.series.map((point) => [point.ts, { count: point.count, errors: point.errors }]));
  replace(
    body,
    h(
      'dl',
      { class: 'red-stats' },
      redStat('Rate', formatRate(total.count / seconds), formatCountOf(total.count, 'span')),
      redStat('Errors', formatPercent(errorRate), `${formatCount(total.errors)} failed`, total.errors > 0 ? 'stat-error' : ''),
      redStat('p50', formatDuration(total.p50_us), `avg ${formatDuration(total.avg_us)}`),
      redStat('p99', formatDuration(total.p99_us), `max ${formatDuration(total.max_us)}`),
    ),
    h(
      'div',
      { class: 'service-charts' },
      h(
        'figure',
        null,
        h('figcaption', null, 'Latency', swatch('var(--accent)', 'p50', true), swatch(P99_COLOR, 'p99')),
        latencyChart(
          window,
          [
            { name: 'p50', color: 'var(--accent)', values: p50 },
            { name: 'p99', color: P99_COLOR, values: p99 },
          ],
          `${subject} latency, p50 and p99`,
        ),
      ),
      h(
        'figure',
        null,
        h('figcaption', null, 'Spans per minute', swatch('var(--accent)', 'spans', true), swatch(ERROR_COLOR, 'errors')),
        countChart(window, { values: counts }, `${subject} spans per minute`),
      ),
    ),
  );
}

function swatch(color: string, label: string, first = false): HTMLElement {
  return h('span', { class: `legend-key${first ? ' legend-key-first' : ''}` }, h('span', { class: 'legend-swatch', style: `background: ${color}` }), label);
}

function redStat(label: string, value: string, detail: string, className = ''): HTMLElement {
  return h('div', { class: `stat ${className}` }, h('dt', null, label), h('dd', null, value), h('div', { class: 'stat-detail' }, detail));
}
