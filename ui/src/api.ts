// Typed client for Caracal's query API (Jaeger v1 shapes plus /api/v1/metrics).

export type TagValue = string | number | boolean;

export interface KeyValue {
  key: string;
  type: string;
  value: TagValue;
}

export interface SpanReference {
  refType: 'CHILD_OF' | 'FOLLOWS_FROM';
  traceID: string;
  spanID: string;
}

export interface Log {
  /** Unix microseconds. */
  timestamp: number;
  fields: KeyValue[];
}

export interface Span {
  traceID: string;
  spanID: string;
  operationName: string;
  references: SpanReference[];
  /** Unix microseconds. */
  startTime: number;
  /** Microseconds. */
  duration: number;
  tags: KeyValue[];
  logs: Log[];
  processID: string;
  flags?: number;
  warnings?: string[] | null;
}

export interface Process {
  serviceName: string;
  tags: KeyValue[];
}

export interface Trace {
  traceID: string;
  spans: Span[];
  processes: Record<string, Process>;
  warnings?: string[] | null;
}

export interface Dependency {
  parent: string;
  child: string;
  callCount: number;
  errorCount: number;
  /** `service`, `database`, `messaging` or `peer`. */
  childType: string;
}

export interface MetricsPoint {
  /** Step start, Unix milliseconds. */
  ts: number;
  count: number;
  errors: number;
  min_us: number;
  avg_us: number;
  max_us: number;
  p50_us: number;
  p90_us: number;
  p95_us: number;
  p99_us: number;
  p999_us: number;
}

export interface Metrics {
  series: MetricsPoint[];
  total: MetricsPoint;
}

/** One instance of a service (a process or host) with its spans in a window. */
export interface InstanceSummary {
  instance: string;
  count: number;
  errors: number;
}

export interface TraceSearch {
  service?: string;
  operation?: string;
  /** Tag filters, sent as a JSON object. */
  tags?: Record<string, string>;
  /** Go-style durations, e.g. `120ms`. */
  minDuration?: string;
  maxDuration?: string;
  /** Unix microseconds. */
  start?: number;
  end?: number;
  limit?: number;
}

interface ApiErrorEntry {
  code: number;
  msg: string;
}

/** A failed request, carrying the API's own message when it sent one. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

function isAbort(error: unknown): boolean {
  return error instanceof DOMException && error.name === 'AbortError';
}

const TOKEN_KEY = 'caracal.queryToken';

/** The query token this browser sends (`Authorization: Bearer`), if one was given. */
export function queryToken(): string | null {
  return window.localStorage.getItem(TOKEN_KEY);
}

/** Remembers the query token for this browser; an empty one forgets it. */
export function setQueryToken(token: string): void {
  if (token) window.localStorage.setItem(TOKEN_KEY, token);
  else window.localStorage.removeItem(TOKEN_KEY);
}

async function getJson(path: string, signal?: AbortSignal): Promise<unknown> {
  let response: Response;
  const headers: Record<string, string> = { Accept: 'application/json' };
  const token = queryToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    response = await fetch(path, { signal, headers });
  } catch (error) {
    if (isAbort(error)) throw error;
    throw new ApiError(`cannot reach the query service (${String(error)})`, 0);
  }
  const text = await response.text();
  let body: unknown = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON: reported below if the status is an error, else as a bad body.
  }
  const errors = (body as { errors?: ApiErrorEntry[] | null } | null)?.errors;
  if (errors && errors.length > 0) {
    throw new ApiError(errors.map((entry) => entry.msg).join('; '), response.status);
  }
  if (!response.ok) {
    const detail = text.trim().slice(0, 300) || response.statusText;
    throw new ApiError(`HTTP ${response.status}: ${detail}`, response.status);
  }
  if (body === null) {
    throw new ApiError(`invalid JSON from ${path}`, response.status);
  }
  return body;
}

async function getData<T>(path: string, signal?: AbortSignal): Promise<T> {
  const body = (await getJson(path, signal)) as { data: T };
  return body.data;
}

function query(params: Record<string, string | number | undefined>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== '') search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

export function getServices(signal?: AbortSignal): Promise<string[]> {
  return getData<string[] | null>('/api/services', signal).then((names) => names ?? []);
}

export function getOperations(service: string, signal?: AbortSignal): Promise<string[]> {
  return getData<string[] | null>(
    `/api/services/${encodeURIComponent(service)}/operations`,
    signal,
  ).then((names) => names ?? []);
}

export function searchTraces(search: TraceSearch, signal?: AbortSignal): Promise<Trace[]> {
  const tags = search.tags && Object.keys(search.tags).length > 0 ? JSON.stringify(search.tags) : undefined;
  const params = query({
    service: search.service,
    operation: search.operation,
    tags,
    minDuration: search.minDuration,
    maxDuration: search.maxDuration,
    start: search.start,
    end: search.end,
    limit: search.limit,
  });
  return getData<Trace[] | null>(`/api/traces${params}`, signal).then((traces) => traces ?? []);
}

/** One trace; rejects with an ApiError of status 404 when it is unknown. */
export async function getTrace(traceId: string, signal?: AbortSignal): Promise<Trace> {
  const traces = await getData<Trace[] | null>(`/api/traces/${encodeURIComponent(traceId)}`, signal);
  const trace = traces?.[0];
  if (!trace) throw new ApiError('trace not found', 404);
  return trace;
}

/** Edges seen in the `lookbackMs` before `endTs` (Unix ms). */
export function getDependencies(endTs: number, lookbackMs: number, signal?: AbortSignal): Promise<Dependency[]> {
  return getData<Dependency[] | null>(
    `/api/dependencies${query({ endTs, lookback: lookbackMs })}`,
    signal,
  ).then((edges) => edges ?? []);
}

/**
 * RED metrics; start/end are Unix ms, step is seconds (a multiple of 10, of 60 with an
 * instance); spanKind narrows to one kind, instance to one instance of the service.
 */
export async function getMetrics(
  params: { service: string; instance?: string; operation?: string; spanKind?: string; start: number; end: number; step: number },
  signal?: AbortSignal,
): Promise<Metrics> {
  return (await getJson(`/api/v1/metrics${query(params)}`, signal)) as Metrics;
}

/** The named instances of a service with spans between start and end (Unix ms). */
export async function getInstances(
  params: { service: string; start: number; end: number },
  signal?: AbortSignal,
): Promise<InstanceSummary[]> {
  const body = (await getJson(`/api/v1/instances${query(params)}`, signal)) as { instances: InstanceSummary[] };
  return body.instances;
}

export { isAbort };
