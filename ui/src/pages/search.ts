// Search (home): the form, a scatter plot of the results, and the result list.

import { getOperations, getServices, isAbort, searchTraces, type TraceSearch } from '../api';
import { scatterPlot } from '../charts/scatter';
import { serviceColor } from '../colors';
import { empty, errorBox, h, option, replace, spinner } from '../dom';
import { formatAgo, formatCountOf, formatDateTime, formatDuration, shortId } from '../format';
import { LOOKBACKS, lookbackMs } from '../lookback';
import { summarize, type TraceSummary } from '../model';
import { navigate, type PageContext } from '../router';
import { parseTags } from '../tags';

const FIELDS = ['service', 'operation', 'tags', 'lookback', 'start', 'end', 'minDuration', 'maxDuration', 'limit'] as const;
type Field = (typeof FIELDS)[number];
/** The form as text, as in the URL; `start` and `end` are Unix ms (custom range only). */
type FormValues = Record<Field, string>;

const DEFAULTS: FormValues = {
  service: '',
  operation: '',
  tags: '',
  lookback: '1h',
  start: '',
  end: '',
  minDuration: '',
  maxDuration: '',
  limit: '20',
};

const LAST_SERVICE_KEY = 'caracal.lastService';

const SORTS: Record<string, { label: string; compare: (a: TraceSummary, b: TraceSummary) => number }> = {
  recent: { label: 'Most recent', compare: (a, b) => b.start - a.start },
  longest: { label: 'Longest first', compare: (a, b) => b.duration - a.duration },
  shortest: { label: 'Shortest first', compare: (a, b) => a.duration - b.duration },
  spans: { label: 'Most spans', compare: (a, b) => b.spanCount - a.spanCount },
};

/** datetime-local value (local time) for Unix ms, and back. */
const toLocalInput = (ms: number) => {
  const date = new Date(ms - new Date(ms).getTimezoneOffset() * 60_000);
  return date.toISOString().slice(0, 16);
};
const fromLocalInput = (text: string) => (text ? new Date(text).getTime() : NaN);

function valuesFromQuery(query: URLSearchParams): FormValues {
  const values = { ...DEFAULTS };
  for (const field of FIELDS) {
    const value = query.get(field);
    if (value !== null) values[field] = value;
  }
  return values;
}

function queryFromValues(values: FormValues): string {
  const query = new URLSearchParams();
  for (const field of FIELDS) {
    if (values[field] !== '' && !(values.lookback !== 'custom' && (field === 'start' || field === 'end'))) {
      query.set(field, values[field]);
    }
  }
  return query.toString();
}

/** The API request for the form, or an Error saying what is wrong with the form. */
function buildSearch(values: FormValues, now: number): TraceSearch {
  let startMs: number;
  let endMs: number;
  if (values.lookback === 'custom') {
    startMs = values.start ? Number(values.start) : NaN;
    endMs = values.end ? Number(values.end) : now;
    if (Number.isNaN(startMs)) throw new Error('choose a start time for the custom range');
    if (Number.isNaN(endMs)) throw new Error('the end time is not valid');
    if (startMs >= endMs) throw new Error('the start time must be before the end time');
  } else {
    endMs = now;
    startMs = now - lookbackMs(values.lookback, DEFAULTS.lookback);
  }
  const limit = Number(values.limit || DEFAULTS.limit);
  if (!Number.isInteger(limit) || limit <= 0) throw new Error('the limit must be a positive whole number');
  return {
    service: values.service || undefined,
    operation: values.operation || undefined,
    tags: parseTags(values.tags),
    minDuration: values.minDuration.trim() || undefined,
    maxDuration: values.maxDuration.trim() || undefined,
    start: startMs * 1000,
    end: endMs * 1000,
    limit,
  };
}

function field(label: string, control: HTMLElement, hint?: string): HTMLElement {
  return h('label', { class: 'field' }, h('span', { class: 'field-label' }, label), control, hint && h('span', { class: 'field-hint' }, hint));
}

export async function searchPage({ root, query, signal }: PageContext): Promise<void> {
  const values = valuesFromQuery(query);
  const hasSearch = FIELDS.some((name) => query.has(name));

  const serviceSelect = h('select', { name: 'service', 'aria-label': 'Service' });
  const operationSelect = h('select', { name: 'operation', 'aria-label': 'Operation' });
  const tagsInput = h('input', { name: 'tags', type: 'text', placeholder: 'http.status_code=500 error=true', autocomplete: 'off', spellcheck: 'false' });
  tagsInput.value = values.tags;
  const lookbackSelect = h('select', { name: 'lookback', 'aria-label': 'Lookback' });
  for (const choice of LOOKBACKS) lookbackSelect.append(option(choice.value, choice.label, choice.value === values.lookback));
  lookbackSelect.append(option('custom', 'Custom range…', values.lookback === 'custom'));
  const startInput = h('input', { name: 'start', type: 'datetime-local' });
  const endInput = h('input', { name: 'end', type: 'datetime-local' });
  startInput.value = values.start ? toLocalInput(Number(values.start)) : toLocalInput(Date.now() - 3_600_000);
  endInput.value = values.end ? toLocalInput(Number(values.end)) : '';
  const customRange = h('div', { class: 'custom-range' }, field('Start', startInput), field('End', endInput, 'empty = now'));
  const minInput = h('input', { name: 'minDuration', type: 'text', placeholder: 'e.g. 100ms', autocomplete: 'off' });
  const maxInput = h('input', { name: 'maxDuration', type: 'text', placeholder: 'e.g. 1.5s', autocomplete: 'off' });
  minInput.value = values.minDuration;
  maxInput.value = values.maxDuration;
  const limitInput = h('input', { name: 'limit', type: 'number', min: 1, max: 1500, step: 1 });
  limitInput.value = values.limit;
  const formError = h('div', { class: 'form-error', role: 'alert' });
  const submit = h('button', { type: 'submit', class: 'button button-primary' }, 'Find Traces');

  const showCustom = () => customRange.toggleAttribute('hidden', lookbackSelect.value !== 'custom');
  showCustom();
  lookbackSelect.addEventListener('change', showCustom);

  const form = h(
    'form',
    { class: 'search-form', novalidate: true },
    field('Service', serviceSelect),
    field('Operation', operationSelect),
    field('Tags', tagsInput, 'key=value pairs separated by spaces; quote values with spaces'),
    field('Lookback', lookbackSelect),
    customRange,
    h('div', { class: 'field-row' }, field('Min duration', minInput), field('Max duration', maxInput)),
    field('Limit results', limitInput),
    formError,
    submit,
  );
  const results = h('section', { class: 'search-results', 'aria-live': 'polite' });
  replace(root, h('div', { class: 'search-page' }, h('aside', { class: 'panel search-panel' }, h('h2', { class: 'panel-title' }, 'Search'), form), results));

  // Only the latest load fills the list: a service picked while the first load is in
  // flight must not get the operations of both.
  let operationsController: AbortController | null = null;
  const loadOperations = async (service: string, selected: string) => {
    operationsController?.abort();
    const controller = new AbortController();
    operationsController = controller;
    signal.addEventListener('abort', () => controller.abort(), { once: true });
    replace(operationSelect, option('', 'All operations', true));
    if (!service) return;
    operationSelect.disabled = true;
    try {
      const operations = (await getOperations(service, controller.signal)).sort((a, b) => a.localeCompare(b));
      if (operationsController !== controller) return;
      for (const name of operations) operationSelect.append(option(name, name, name === selected));
    } catch (error) {
      if (!isAbort(error)) formError.textContent = `Operations: ${(error as Error).message}`;
    } finally {
      if (operationsController === controller) operationSelect.disabled = false;
    }
  };

  serviceSelect.addEventListener('change', () => {
    localStorage.setItem(LAST_SERVICE_KEY, serviceSelect.value);
    void loadOperations(serviceSelect.value, '');
  });

  const currentValues = (): FormValues => ({
    service: serviceSelect.value,
    operation: operationSelect.value,
    tags: tagsInput.value.trim(),
    lookback: lookbackSelect.value,
    start: lookbackSelect.value === 'custom' ? String(fromLocalInput(startInput.value) || '') : '',
    end: lookbackSelect.value === 'custom' && endInput.value ? String(fromLocalInput(endInput.value)) : '',
    minDuration: minInput.value.trim(),
    maxDuration: maxInput.value.trim(),
    limit: limitInput.value.trim(),
  });

  let searchController: AbortController | null = null;
  const run = async (formValues: FormValues) => {
    formError.textContent = '';
    let request: TraceSearch;
    try {
      request = buildSearch(formValues, Date.now());
    } catch (error) {
      formError.textContent = (error as Error).message;
      return;
    }
    searchController?.abort();
    const controller = new AbortController();
    searchController = controller;
    signal.addEventListener('abort', () => controller.abort(), { once: true });
    replace(results, spinner('Searching traces…'));
    submit.disabled = true;
    try {
      const traces = await searchTraces(request, controller.signal);
      renderResults(results, traces.map(summarize), request);
    } catch (error) {
      if (!isAbort(error)) replace(results, errorBox(error));
    } finally {
      if (searchController === controller) submit.disabled = false;
    }
  };

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const formValues = currentValues();
    navigate(`/search?${queryFromValues(formValues)}`, { silent: true });
    void run(formValues);
  });

  // Services, then the operations of the chosen one.
  serviceSelect.disabled = true;
  serviceSelect.append(option('', 'Loading…', true));
  try {
    const services = (await getServices(signal)).sort((a, b) => a.localeCompare(b));
    replace(serviceSelect);
    if (services.length === 0) {
      serviceSelect.append(option('', 'No services yet', true));
      replace(results, empty('No services yet', 'Send spans over OTLP (gRPC :4317, HTTP :4318/v1/traces) and they will show up here.'));
      return;
    }
    serviceSelect.append(option('', 'All services', false));
    const remembered = localStorage.getItem(LAST_SERVICE_KEY) ?? '';
    const chosen = hasSearch ? values.service : services.includes(remembered) ? remembered : services[0]!;
    for (const name of services) serviceSelect.append(option(name, name, name === chosen));
    if (chosen && !services.includes(chosen)) serviceSelect.append(option(chosen, chosen, true));
    serviceSelect.value = chosen;
    serviceSelect.disabled = false;
    await loadOperations(chosen, values.operation);
  } catch (error) {
    if (isAbort(error)) return;
    replace(serviceSelect, option('', 'Unavailable', true));
    replace(results, errorBox(error));
    return;
  }
  if (hasSearch) {
    await run(values);
  } else {
    replace(results, empty('Find traces', 'Pick a service and press Find Traces.'));
  }
}

function renderResults(container: HTMLElement, summaries: TraceSummary[], request: TraceSearch): void {
  if (summaries.length === 0) {
    replace(container, empty('No traces found', 'Try a longer lookback, fewer tags or another service.'));
    return;
  }
  const sortSelect = h('select', { class: 'sort-select', 'aria-label': 'Sort results' });
  for (const [value, sort] of Object.entries(SORTS)) sortSelect.append(option(value, sort.label, value === 'recent'));
  const list = h('ol', { class: 'result-list' });
  const maxDuration = Math.max(...summaries.map((summary) => summary.duration), 1);
  const now = Date.now();
  const draw = () => {
    const sorted = [...summaries].sort(SORTS[sortSelect.value]!.compare);
    replace(list, ...sorted.map((summary) => resultItem(summary, maxDuration, now)));
  };
  sortSelect.addEventListener('change', draw);
  draw();
  const errors = summaries.filter((summary) => summary.errorCount > 0).length;
  const plot = scatterPlot(
    summaries.map((summary) => ({
      time: summary.start / 1000,
      duration: summary.duration,
      error: summary.errorCount > 0,
      weight: summary.spanCount,
      label: `${summary.rootService}: ${summary.rootOperation}\n${formatDuration(summary.duration)}, ${summary.spanCount} spans${summary.errorCount ? `, ${summary.errorCount} errors` : ''}\n${formatDateTime(summary.start / 1000)}`,
      onClick: () => navigate(`/trace/${summary.trace.traceID}`),
    })),
  );
  const limited = request.limit !== undefined && summaries.length >= request.limit;
  replace(
    container,
    h('div', { class: 'panel scatter-panel' }, plot),
    h(
      'div',
      { class: 'results-bar' },
      h(
        'div',
        { class: 'results-count' },
        h('strong', null, `${summaries.length} trace${summaries.length === 1 ? '' : 's'}`),
        errors > 0 && h('span', { class: 'badge badge-error' }, `${errors} with errors`),
        limited && h('span', { class: 'muted' }, '(limit reached)'),
      ),
      h('label', { class: 'inline-field' }, 'Sort ', sortSelect),
    ),
    list,
  );
}

function resultItem(summary: TraceSummary, maxDuration: number, now: number): HTMLElement {
  const id = summary.trace.traceID;
  const startMs = summary.start / 1000;
  return h(
    'li',
    null,
    h(
      'a',
      { class: `result${summary.errorCount > 0 ? ' result-error' : ''}`, href: `/trace/${id}`, 'data-trace-id': id },
      h(
        'div',
        { class: 'result-head' },
        h('span', { class: 'result-title' }, h('span', { class: 'service-name', style: `--service: ${serviceColor(summary.rootService)}` }, summary.rootService), h('span', { class: 'op-name' }, summary.rootOperation)),
        h('span', { class: 'trace-id mono', title: id }, shortId(id)),
        h('span', { class: 'result-duration' }, formatDuration(summary.duration)),
      ),
      h('div', { class: 'duration-track' }, h('div', { class: 'duration-fill', style: `width: ${Math.max(0.5, (summary.duration / maxDuration) * 100).toFixed(2)}%` })),
      h(
        'div',
        { class: 'result-meta' },
        h('span', { class: 'badge' }, formatCountOf(summary.spanCount, 'span')),
        summary.errorCount > 0 && h('span', { class: 'badge badge-error' }, `${summary.errorCount} error${summary.errorCount === 1 ? '' : 's'}`),
        h('span', { class: 'chips' }, ...summary.services.map((service) => h('span', { class: 'chip', style: `--service: ${serviceColor(service.name)}` }, `${service.name} (${service.count})`))),
        h('span', { class: 'result-time', title: formatDateTime(startMs) }, `${formatDateTime(startMs)} · ${formatAgo(startMs, now)}`),
      ),
    ),
  );
}
