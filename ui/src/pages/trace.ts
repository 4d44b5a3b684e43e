// Trace view: header numbers and the span waterfall with expandable details.

import { getTrace, isAbort, type KeyValue, type Span, type Trace } from '../api';
import { ERROR_COLOR, serviceColor } from '../colors';
import { empty, errorBox, h, replace, spinner } from '../dom';
import { formatAxisDuration, formatDateTime, formatDuration } from '../format';
import { buildTree, summarize, tagText, type SpanNode, type TraceSummary } from '../model';
import type { PageContext } from '../router';
import { niceTicks } from '../charts/scale';

export async function tracePage({ root, params, signal }: PageContext): Promise<void> {
  const traceId = params.id ?? '';
  replace(root, spinner(`Loading trace ${traceId}…`));
  let trace: Trace;
  try {
    trace = await getTrace(traceId, signal);
  } catch (error) {
    if (isAbort(error)) return;
    const notFound = (error as { status?: number }).status === 404;
    replace(root, notFound ? empty('Trace not found', `No spans with trace id ${traceId}. It may have expired, or not been flushed yet.`) : errorBox(error));
    return;
  }
  if (trace.spans.length === 0) {
    replace(root, empty('Empty trace', 'This trace has no spans.'));
    return;
  }
  document.title = `Trace ${traceId.slice(0, 7)} · Caracal`;
  const summary = summarize(trace);
  const { ordered } = buildTree(trace);
  replace(root, header(summary, ordered), waterfall(summary, ordered));
}

function stat(label: string, value: string | HTMLElement, className = ''): HTMLElement {
  return h('div', { class: `stat ${className}` }, h('dt', null, label), h('dd', null, value));
}

function header(summary: TraceSummary, ordered: SpanNode[]): HTMLElement {
  const { trace } = summary;
  const depth = ordered.reduce((deepest, node) => Math.max(deepest, node.depth), 0) + 1;
  return h(
    'header',
    { class: 'panel trace-header' },
    h(
      'div',
      { class: 'trace-title' },
      h('h1', null, h('span', { class: 'service-name', style: `--service: ${serviceColor(summary.rootService)}` }, summary.rootService), h('span', { class: 'op-name' }, summary.rootOperation)),
      h('span', { class: 'trace-id mono', 'data-testid': 'trace-id' }, trace.traceID),
    ),
    h(
      'dl',
      { class: 'stats' },
      stat('Started', formatDateTime(summary.start / 1000)),
      stat('Duration', formatDuration(summary.duration)),
      stat('Services', String(summary.services.length)),
      stat('Depth', String(depth)),
      stat('Spans', String(summary.spanCount)),
      stat('Errors', String(summary.errorCount), summary.errorCount > 0 ? 'stat-error' : ''),
    ),
    h('div', { class: 'chips' }, ...summary.services.map((service) => h('span', { class: 'chip', style: `--service: ${serviceColor(service.name)}` }, `${service.name} (${service.count})`))),
  );
}

/** One row per span in tree order; a click on a row shows its details below it. */
function waterfall(summary: TraceSummary, ordered: SpanNode[]): HTMLElement {
  const { trace } = summary;
  const traceStart = summary.start;
  const total = Math.max(summary.duration, 1);
  const collapsed = new Set<string>();
  const expanded = new Set<string>();
  const rows = h('div', { class: 'wf-rows' });

  const percent = (us: number) => (us / total) * 100;

  const draw = () => {
    const children: HTMLElement[] = [];
    const hidden = new Set<string>();
    for (const node of ordered) {
      if (node.parentId && (hidden.has(node.parentId) || collapsed.has(node.parentId))) {
        hidden.add(node.span.spanID);
        continue;
      }
      children.push(row(node));
      if (expanded.has(node.span.spanID)) children.push(details(trace, node, traceStart));
    }
    replace(rows, ...children);
  };

  const row = (node: SpanNode): HTMLElement => {
    const { span } = node;
    const color = serviceColor(node.service);
    const offset = span.startTime - traceStart;
    const left = percent(offset);
    const width = Math.max(percent(span.duration), 0.15);
    // The duration goes right of the bar, else left of it, else inside it.
    const labelPlace = left + width < 82 ? 'right' : left > 14 ? 'left' : 'inside';
    const toggle =
      node.children.length > 0
        ? h(
            'button',
            {
              class: 'wf-toggle',
              type: 'button',
              'aria-label': collapsed.has(span.spanID) ? 'Expand children' : 'Collapse children',
              'aria-expanded': String(!collapsed.has(span.spanID)),
              onclick: (event: Event) => {
                event.stopPropagation();
                if (collapsed.has(span.spanID)) collapsed.delete(span.spanID);
                else collapsed.add(span.spanID);
                draw();
              },
            },
            collapsed.has(span.spanID) ? `▸ ${countDescendants(node)}` : '▾',
          )
        : h('span', { class: 'wf-toggle-spacer' });
    const bar = h(
      'div',
      { class: 'wf-bar', style: `left: ${left.toFixed(3)}%; width: ${width.toFixed(3)}%; --service: ${color}` },
      ...span.logs.map((log) => h('span', { class: 'wf-log-mark', style: `left: ${(((log.timestamp - span.startTime) / Math.max(span.duration, 1)) * 100).toFixed(2)}%` })),
    );
    const labelStyle = {
      right: `left: calc(${(left + width).toFixed(3)}% + 6px)`,
      left: `right: calc(${(100 - left).toFixed(3)}% + 6px)`,
      inside: `right: calc(${(100 - left - width).toFixed(3)}% + 6px)`,
    }[labelPlace];
    const label = h('span', { class: `wf-bar-label wf-bar-label-${labelPlace}`, style: labelStyle }, formatDuration(span.duration));
    const element = h(
      'div',
      {
        class: `wf-row${node.hasError ? ' wf-row-error' : ''}${expanded.has(span.spanID) ? ' wf-row-expanded' : ''}`,
        'data-span-id': span.spanID,
        role: 'button',
        tabindex: 0,
        'aria-expanded': String(expanded.has(span.spanID)),
        style: `--service: ${color}`,
      },
      h(
        'div',
        { class: 'wf-name', style: `padding-left: ${8 + node.depth * 14}px`, title: `${node.service}: ${span.operationName}` },
        toggle,
        h('span', { class: 'wf-service' }, node.service),
        node.hasError && h('span', { class: 'wf-error-icon', title: 'error', 'aria-label': 'error' }, '!'),
        h('span', { class: 'wf-op' }, span.operationName),
      ),
      h('div', { class: 'wf-timeline' }, bar, label),
    );
    // In place, so a click costs the same in a trace of 10 spans or 10,000.
    const toggleDetails = () => {
      const open = !expanded.has(span.spanID);
      if (open) {
        expanded.add(span.spanID);
        element.after(details(trace, node, traceStart));
      } else {
        expanded.delete(span.spanID);
        if (element.nextElementSibling?.classList.contains('wf-details')) element.nextElementSibling.remove();
      }
      element.classList.toggle('wf-row-expanded', open);
      element.setAttribute('aria-expanded', String(open));
    };
    element.addEventListener('click', toggleDetails);
    element.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' || event.key === ' ') {
        event.preventDefault();
        toggleDetails();
      }
    });
    return element;
  };

  draw();
  // Round tick times; each row's timeline repeats a grid line every tick (CSS --tick).
  const ticks = niceTicks(0, total, 7).filter((tick) => tick <= total);
  const tickPercent = ticks.length > 1 ? percent(ticks[1]! - ticks[0]!) : 100;
  const ruler = h(
    'div',
    { class: 'wf-head' },
    h('div', { class: 'wf-name wf-head-name' }, 'Service & operation'),
    h(
      'div',
      { class: 'wf-timeline wf-ruler' },
      ...ticks.map((tick) => h('span', { class: `wf-tick${percent(tick) > 92 ? ' wf-tick-end' : ''}`, style: `left: ${percent(tick).toFixed(3)}%` }, formatAxisDuration(tick))),
    ),
  );
  return h('section', { class: 'panel waterfall', 'aria-label': 'Span waterfall', style: `--tick: ${tickPercent.toFixed(4)}%` }, ruler, rows);
}

function countDescendants(node: SpanNode): number {
  return node.children.reduce((sum, child) => sum + 1 + countDescendants(child), 0);
}

function kvTable(items: KeyValue[], className = ''): HTMLElement {
  if (items.length === 0) return h('div', { class: 'muted' }, 'none');
  return h(
    'table',
    { class: `kv ${className}` },
    h(
      'tbody',
      null,
      ...items.map((item) =>
        h('tr', { 'data-key': item.key }, h('th', { scope: 'row' }, item.key), h('td', { class: item.key === 'error' && tagText(item.value) === 'true' ? 'kv-error' : '' }, tagText(item.value))),
      ),
    ),
  );
}

function section(title: string, count: number | null, ...content: HTMLElement[]): HTMLElement {
  return h('section', { class: 'detail-section' }, h('h3', null, title, count !== null && h('span', { class: 'count' }, String(count))), ...content);
}

function details(trace: Trace, node: SpanNode, traceStart: number): HTMLElement {
  const { span } = node;
  const process = trace.processes[span.processID];
  const spanIds = new Set(trace.spans.map((candidate) => candidate.spanID));
  return h(
    'div',
    { class: 'wf-details', 'data-details-for': span.spanID, style: `--service: ${serviceColor(node.service)}` },
    h(
      'div',
      { class: 'detail-head' },
      h('strong', null, span.operationName),
      h('span', { class: 'muted' }, node.service),
      h('span', null, 'Duration ', h('b', null, formatDuration(span.duration))),
      h('span', null, 'Start ', h('b', null, `+${formatDuration(span.startTime - traceStart)}`)),
      h('span', { class: 'mono muted' }, `span ${span.spanID}`),
    ),
    h(
      'div',
      { class: 'detail-grid' },
      section('Tags', span.tags.length, kvTable(span.tags, 'span-tags')),
      section('Process', process?.tags.length ?? 0, kvTable([{ key: 'service.name', type: 'string', value: process?.serviceName ?? node.service }, ...(process?.tags ?? [])], 'process-tags')),
    ),
    span.logs.length > 0 && section('Logs', span.logs.length, ...span.logs.map((log) => logEntry(log, traceStart))),
    span.references.length > 0 && section('References', span.references.length, referenceList(span, spanIds)),
  );
}

function logEntry(log: Span['logs'][number], traceStart: number): HTMLElement {
  const event = log.fields.find((entry) => entry.key === 'event');
  const isException = event && tagText(event.value) === 'exception';
  return h(
    'div',
    { class: 'log-entry' },
    h('div', { class: 'log-head' }, h('span', { class: 'mono' }, `+${formatDuration(log.timestamp - traceStart)}`), event && h('b', { style: isException ? `color: ${ERROR_COLOR}` : '' }, tagText(event.value))),
    kvTable(log.fields.filter((entry) => entry !== event)),
  );
}

function referenceList(span: Span, spanIds: Set<string>): HTMLElement {
  return h(
    'ul',
    { class: 'ref-list' },
    ...span.references.map((ref) => {
      const local = ref.traceID === span.traceID && spanIds.has(ref.spanID);
      const target = local
        ? h('span', { class: 'mono' }, `span ${ref.spanID}`)
        : h('a', { class: 'mono', href: `/trace/${ref.traceID}` }, `trace ${ref.traceID} · span ${ref.spanID}`);
      return h('li', null, h('span', { class: 'badge' }, ref.refType), ' ', target, !local && ref.traceID === span.traceID && h('span', { class: 'muted' }, ' (not in this trace)'));
    }),
  );
}
