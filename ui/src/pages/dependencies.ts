// Dependencies: the service map and the list of edges.

import { getDependencies, isAbort, type Dependency } from '../api';
import { serviceMap } from '../charts/servicemap';
import { empty, errorBox, h, replace, spinner } from '../dom';
import { formatCount, formatPercent } from '../format';
import { LOOKBACKS, lookbackMs } from '../lookback';
import { navigate, type PageContext } from '../router';

const DEFAULT_LOOKBACK = '1h';

export async function dependenciesPage({ root, query, signal }: PageContext): Promise<void> {
  const lookback = LOOKBACKS.some((choice) => choice.value === query.get('lookback')) ? query.get('lookback')! : DEFAULT_LOOKBACK;
  const select = h('select', { 'aria-label': 'Lookback' });
  for (const choice of LOOKBACKS) {
    const element = h('option', { value: choice.value }, choice.label);
    element.selected = choice.value === lookback;
    select.append(element);
  }
  select.addEventListener('change', () => navigate(`/dependencies?lookback=${select.value}`, { replace: true }));
  const body = h('div', { class: 'dependencies-body' }, spinner('Loading dependencies…'));
  replace(root, h('div', { class: 'page-head' }, h('h1', null, 'Dependencies'), h('label', { class: 'inline-field' }, select)), body);

  let edges: Dependency[];
  try {
    edges = await getDependencies(Date.now(), lookbackMs(lookback, DEFAULT_LOOKBACK), signal);
  } catch (error) {
    if (!isAbort(error)) replace(body, errorBox(error));
    return;
  }
  if (edges.length === 0) {
    replace(body, empty('No dependencies found', 'Calls between services appear here once traces cross service boundaries. Try a longer lookback.'));
    return;
  }
  replace(
    body,
    h(
      'div',
      { class: 'panel map-panel' },
      legend(),
      h('div', { class: 'map-scroll' }, serviceMap(edges, (service) => `/search?service=${encodeURIComponent(service)}&lookback=${lookback}`)),
    ),
    edgeTable(edges),
  );
}

function legend(): HTMLElement {
  const item = (kind: string, label: string) => h('span', { class: `legend-item legend-${kind}` }, h('span', { class: 'legend-shape' }), label);
  return h(
    'div',
    { class: 'map-legend' },
    item('service', 'service'),
    item('database', 'database'),
    item('messaging', 'messaging'),
    item('peer', 'uninstrumented peer'),
    h('span', { class: 'legend-item legend-error' }, h('span', { class: 'legend-line' }), 'edge with errors'),
  );
}

function edgeTable(edges: Dependency[]): HTMLElement {
  const sorted = [...edges].sort((a, b) => b.callCount - a.callCount || a.parent.localeCompare(b.parent));
  return h(
    'div',
    { class: 'panel' },
    h(
      'table',
      { class: 'data-table edge-table' },
      h('thead', null, h('tr', null, h('th', null, 'Caller'), h('th', null, 'Callee'), h('th', null, 'Type'), h('th', { class: 'num' }, 'Calls'), h('th', { class: 'num' }, 'Errors'), h('th', { class: 'num' }, 'Error rate'))),
      h(
        'tbody',
        null,
        ...sorted.map((edge) =>
          h(
            'tr',
            null,
            h('td', null, edge.parent),
            h('td', null, edge.child),
            h('td', null, h('span', { class: 'badge' }, edge.childType)),
            h('td', { class: 'num' }, formatCount(edge.callCount)),
            h('td', { class: `num${edge.errorCount > 0 ? ' text-error' : ''}` }, formatCount(edge.errorCount)),
            h('td', { class: `num${edge.errorCount > 0 ? ' text-error' : ''}` }, formatPercent(edge.callCount ? edge.errorCount / edge.callCount : 0)),
          ),
        ),
      ),
    ),
  );
}
