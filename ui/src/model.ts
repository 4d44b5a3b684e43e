// Derived views of traces: the span tree, root span, errors, services.

import type { KeyValue, Span, Trace } from './api';

export interface SpanNode {
  span: Span;
  service: string;
  depth: number;
  children: SpanNode[];
  /** The parent's span id when the parent is in this trace. */
  parentId: string | null;
  hasError: boolean;
}

export interface TraceSummary {
  trace: Trace;
  root: Span;
  rootService: string;
  rootOperation: string;
  /** Unix microseconds. */
  start: number;
  /** Microseconds, first span start to last span end. */
  duration: number;
  spanCount: number;
  errorCount: number;
  /** Service names with their span counts, most spans first. */
  services: Array<{ name: string; count: number }>;
}

const truthy = (value: KeyValue['value']) => value === true || value === 'true';

/** Whether a span carries the tag error=true. */
export function isError(span: Span): boolean {
  return span.tags.some((tag) => tag.key === 'error' && truthy(tag.value));
}

export function serviceOf(trace: Trace, span: Span): string {
  return trace.processes[span.processID]?.serviceName ?? 'unknown';
}

/** The id of a span's parent: its first CHILD_OF reference in the same trace, else its first reference. */
export function parentIdOf(span: Span): string | null {
  const references = span.references ?? [];
  const childOf = references.find((ref) => ref.refType === 'CHILD_OF' && ref.traceID === span.traceID);
  const parent = childOf ?? references.find((ref) => ref.traceID === span.traceID);
  return parent ? parent.spanID : null;
}

/**
 * The spans as a forest: children under their parents, siblings by start time. Spans whose
 * parent is missing become roots. Returns the roots and the nodes in depth-first order.
 */
export function buildTree(trace: Trace): { roots: SpanNode[]; ordered: SpanNode[] } {
  const nodes = new Map<string, SpanNode>();
  for (const span of trace.spans) {
    nodes.set(span.spanID, { span, service: serviceOf(trace, span), depth: 0, children: [], parentId: null, hasError: isError(span) });
  }
  const roots: SpanNode[] = [];
  for (const node of nodes.values()) {
    const parentId = parentIdOf(node.span);
    const parent = parentId !== null && parentId !== node.span.spanID ? nodes.get(parentId) : undefined;
    if (parent) {
      node.parentId = parentId;
      parent.children.push(node);
    } else {
      roots.push(node);
    }
  }
  const byStart = (a: SpanNode, b: SpanNode) => a.span.startTime - b.span.startTime || b.span.duration - a.span.duration;
  roots.sort(byStart);
  const ordered: SpanNode[] = [];
  const seen = new Set<SpanNode>();
  const visit = (node: SpanNode, depth: number) => {
    if (seen.has(node)) return;
    seen.add(node);
    node.depth = depth;
    ordered.push(node);
    node.children.sort(byStart);
    for (const child of node.children) visit(child, depth + 1);
  };
  for (const root of roots) visit(root, 0);
  // Spans caught in a reference cycle are not reachable from a root: list them as roots.
  for (const node of nodes.values()) {
    if (!seen.has(node)) {
      node.parentId = null;
      roots.push(node);
      visit(node, 0);
    }
  }
  return { roots, ordered };
}

/** Headline numbers of a trace. */
export function summarize(trace: Trace): TraceSummary {
  const spans = trace.spans;
  let start = Infinity;
  let end = -Infinity;
  let errorCount = 0;
  const counts = new Map<string, number>();
  for (const span of spans) {
    start = Math.min(start, span.startTime);
    end = Math.max(end, span.startTime + span.duration);
    if (isError(span)) errorCount += 1;
    const service = serviceOf(trace, span);
    counts.set(service, (counts.get(service) ?? 0) + 1);
  }
  const ids = new Set(spans.map((span) => span.spanID));
  const roots = spans.filter((span) => {
    const parent = parentIdOf(span);
    return parent === null || !ids.has(parent);
  });
  // The true root (no reference at all) wins over orphans; then the earliest.
  const root =
    [...roots].sort((a, b) => Number(parentIdOf(a) !== null) - Number(parentIdOf(b) !== null) || a.startTime - b.startTime)[0] ??
    spans[0]!;
  return {
    trace,
    root,
    rootService: serviceOf(trace, root),
    rootOperation: root.operationName,
    start: Number.isFinite(start) ? start : 0,
    duration: Number.isFinite(end - start) ? end - start : 0,
    spanCount: spans.length,
    errorCount,
    services: [...counts].map(([name, count]) => ({ name, count })).sort((a, b) => b.count - a.count || a.name.localeCompare(b.name)),
  };
}

/** Renders a tag value as text. */
export function tagText(value: KeyValue['value']): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}
