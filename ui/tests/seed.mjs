// Test data: OTLP/JSON traces posted to Caracal's OTLP/HTTP receiver.
import { randomBytes } from 'node:crypto';

const SERVER = 2;
const CLIENT = 3;
const INTERNAL = 1;
const STATUS_ERROR = 2;

export const hex = (bytes) => randomBytes(bytes).toString('hex');

function attr(key, value) {
  if (typeof value === 'boolean') return { key, value: { boolValue: value } };
  if (Number.isInteger(value)) return { key, value: { intValue: String(value) } };
  if (typeof value === 'number') return { key, value: { doubleValue: value } };
  return { key, value: { stringValue: String(value) } };
}

const attrs = (object) => Object.entries(object).map(([key, value]) => attr(key, value));

/**
 * A checkout trace across frontend -> orders -> payments, with a postgres call.
 * `durationScale` stretches every span, `fail` makes the payment span an error,
 * `instance` sets every service's `service.instance.id` (else each is named by host).
 * Returns {traceId, spanCount, body} where body is an OTLP ExportTraceServiceRequest.
 */
export function checkoutTrace({ startMs = Date.now() - 1000, durationScale = 1, fail = true, runTag, instance } = {}) {
  const traceId = hex(16);
  const ns = (ms) => String(BigInt(Math.round((startMs + ms * durationScale) * 1000)) * 1000n);
  const ids = {};
  const span = (key, parent, name, kind, from, to, extra = {}) => {
    ids[key] = hex(8);
    return {
      traceId,
      spanId: ids[key],
      ...(parent ? { parentSpanId: ids[parent] } : {}),
      name,
      kind,
      startTimeUnixNano: ns(from),
      endTimeUnixNano: ns(to),
      attributes: attrs(extra.attributes ?? {}),
      events: extra.events ?? [],
      status: extra.status ?? {},
    };
  };
  const frontend = [
    span('root', null, 'GET /checkout', SERVER, 0, 120, {
      attributes: { 'http.method': 'GET', 'http.route': '/checkout', 'http.status_code': fail ? 500 : 200, ...(runTag ? { 'test.run': runTag } : {}) },
      status: fail ? { code: STATUS_ERROR } : {},
    }),
    span('callOrders', 'root', 'POST /api/orders', CLIENT, 4, 112, {
      attributes: { 'http.method': 'POST', 'http.url': 'http://orders:8080/api/orders' },
    }),
  ];
  const orders = [
    span('orders', 'callOrders', 'POST /api/orders', SERVER, 7, 108, {
      attributes: { 'http.method': 'POST', 'http.route': '/api/orders', 'http.status_code': fail ? 502 : 201 },
    }),
    span('db', 'orders', 'SELECT orders', CLIENT, 10, 31, {
      attributes: { 'db.system': 'postgresql', 'db.name': 'shop', 'db.statement': 'SELECT * FROM orders WHERE customer_id = $1' },
    }),
    span('callPay', 'orders', 'POST /charge', CLIENT, 34, 101, {
      attributes: { 'http.method': 'POST', 'http.url': 'http://payments:8080/charge' },
    }),
  ];
  const payments = [
    span('charge', 'callPay', 'POST /charge', SERVER, 37, 98, {
      attributes: { 'http.method': 'POST', 'http.route': '/charge', 'http.status_code': fail ? 503 : 200 },
      status: fail ? { code: STATUS_ERROR, message: 'card processor unavailable' } : {},
      events: fail
        ? [{
            timeUnixNano: ns(96),
            name: 'exception',
            attributes: attrs({ 'exception.type': 'ProcessorError', 'exception.message': 'card processor unavailable' }),
          }]
        : [],
    }),
    span('fraud', 'charge', 'fraud-check', INTERNAL, 40, 62, {
      attributes: { 'fraud.score': 0.12, 'fraud.rules': 14 },
    }),
  ];
  const resource = (service, extra = {}) => ({
    attributes: attrs({
      'service.name': service,
      'service.version': '1.4.2',
      'host.name': `${service}-7f9c`,
      ...(instance ? { 'service.instance.id': instance } : {}),
      ...extra,
    }),
  });
  const body = {
    resourceSpans: [
      { resource: resource('frontend', { 'telemetry.sdk.language': 'nodejs' }), scopeSpans: [{ scope: { name: 'http' }, spans: frontend }] },
      { resource: resource('orders', { 'telemetry.sdk.language': 'go' }), scopeSpans: [{ scope: { name: 'http' }, spans: orders }] },
      { resource: resource('payments', { 'telemetry.sdk.language': 'java' }), scopeSpans: [{ scope: { name: 'http' }, spans: payments }] },
    ],
  };
  return { traceId, spanCount: frontend.length + orders.length + payments.length, body };
}

/** POSTs one OTLP/JSON request; throws on a non-2xx answer. */
export async function postOtlp(otlpHttpUrl, body, token = null) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(`${otlpHttpUrl}/v1/traces`, {
    method: 'POST',
    headers,
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    throw new Error(`OTLP POST failed: ${response.status} ${await response.text()}`);
  }
}
