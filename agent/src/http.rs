//! HTTP instrumentation (feature `http`, on by default): a tower layer recording a
//! SERVER transaction per request, and a `reqwest` helper recording CLIENT
//! transactions, both propagating W3C `traceparent`.
//!
//! Requests move between threads of an async runtime, so both use
//! [`DetachedTransaction`]s rather than thread-bound [`crate::Transaction`] guards.
//!
//! ```no_run
//! use axum::{routing::get, Extension, Router};
//! use caracal_agent::{http::AgentLayer, Agent, TraceContext};
//!
//! let agent = Agent::builder().service_name("orders").start();
//! let client = reqwest::Client::new();
//! let handler_agent = agent.clone();
//! let app: Router = Router::new()
//!     .route(
//!         "/orders/{id}",
//!         get(move |Extension(context): Extension<TraceContext>| async move {
//!             // A CLIENT transaction, child of this request's SERVER transaction.
//!             let request = client.get("http://stock:8080/items");
//!             let sent = caracal_agent::http::send_with_parent(
//!                 &handler_agent,
//!                 Some(&context),
//!                 "stock",
//!                 request,
//!             );
//!             let _ = sent.await;
//!             "ok"
//!         }),
//!     )
//!     .layer(AgentLayer::new(agent));
//! # let _ = app;
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderValue, Request, Response};
use tower::{Layer, Service};

use crate::context::TRACEPARENT;
use crate::detached::DetachedTransaction;
use crate::{Agent, TraceContext};

/// The `traceparent` of `headers`, if present and valid.
pub fn extract(headers: &HeaderMap) -> Option<TraceContext> {
    headers
        .get(TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .and_then(TraceContext::from_traceparent)
}

/// Sets the `traceparent` header to `context`.
pub fn inject_context(context: &TraceContext, headers: &mut HeaderMap) {
    if let Ok(value) = HeaderValue::from_str(&context.to_traceparent()) {
        headers.insert(TRACEPARENT, value);
    }
}

/// Sets the `traceparent` header of the innermost [`crate::Transaction`] of `agent`
/// open on this thread; does nothing when none is open.
pub fn inject_headers(agent: &Agent, headers: &mut HeaderMap) {
    if let Some(context) = agent.current_context() {
        inject_context(&context, headers);
    }
}

/// A tower layer recording one SERVER transaction (type `URL`) per request, named
/// `"{METHOD} {route}"`: the matched axum route (feature `axum`) or else the path.
///
/// The transaction continues the request's `traceparent`, fails on a 5xx response or
/// an error of the inner service, and ends when the response future completes (before
/// the body is streamed). Its [`TraceContext`] is put in the request's extensions, for
/// handlers to start children from (`Extension<TraceContext>` in axum).
///
/// With axum, add it with `Router::layer` so routes are matched first.
#[derive(Debug, Clone)]
pub struct AgentLayer {
    agent: Agent,
}

impl AgentLayer {
    /// A layer recording into `agent`.
    pub fn new(agent: Agent) -> Self {
        Self { agent }
    }
}

impl<S> Layer<S> for AgentLayer {
    type Service = AgentService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AgentService {
            inner,
            agent: self.agent.clone(),
        }
    }
}

/// The service [`AgentLayer`] wraps around another.
#[derive(Debug, Clone)]
pub struct AgentService<S> {
    inner: S,
    agent: Agent,
}

fn route<B>(request: &Request<B>) -> &str {
    #[cfg(feature = "axum")]
    if let Some(matched) = request.extensions().get::<axum::extract::MatchedPath>() {
        return matched.as_str();
    }
    request.uri().path()
}

impl<S, RequestBody, ResponseBody> Service<Request<RequestBody>> for AgentService<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: Request<RequestBody>) -> Self::Future {
        let parent = extract(request.headers());
        let name = format!("{} {}", request.method(), route(&request));
        let transaction = self
            .agent
            .detached_transaction("URL", &name, parent.as_ref());
        request.extensions_mut().insert(transaction.context());
        ResponseFuture {
            inner: self.inner.call(request),
            transaction: Some(transaction),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`AgentService`]: ends the transaction on completion
    /// (or when dropped unfinished).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        transaction: Option<DetachedTransaction>,
    }
}

impl<F, ResponseBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResponseBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(context));
        if let Some(mut transaction) = this.transaction.take() {
            match &output {
                Ok(response) if response.status().is_server_error() => {
                    transaction.set_status_error(response.status().to_string());
                }
                Ok(_) => {}
                Err(_) => transaction.set_status_error("service error"),
            }
            transaction.finish();
        }
        Poll::Ready(output)
    }
}

/// Sends `request` as a CLIENT transaction (type `Call`) named
/// `"{peer}:{METHOD} {path}"`, child of the innermost [`crate::Transaction`] of `agent`
/// open on this thread when called (else a new trace), with its `traceparent` set. The
/// transaction fails on a transport error or a 5xx response and lasts until the
/// response headers arrive.
#[cfg(feature = "reqwest")]
pub fn send(
    agent: &Agent,
    peer: &str,
    request: reqwest::RequestBuilder,
) -> impl Future<Output = reqwest::Result<reqwest::Response>> + Send + 'static {
    let parent = agent.current_context();
    send_with_parent(agent, parent.as_ref(), peer, request)
}

/// [`send`] as a child of `parent` (such as the [`TraceContext`] [`AgentLayer`] puts in
/// a request's extensions).
#[cfg(feature = "reqwest")]
pub fn send_with_parent(
    agent: &Agent,
    parent: Option<&TraceContext>,
    peer: &str,
    request: reqwest::RequestBuilder,
) -> impl Future<Output = reqwest::Result<reqwest::Response>> + Send + 'static {
    let (client, request) = request.build_split();
    let prepared = request.map(|mut request| {
        let name = format!("{peer}:{} {}", request.method(), request.url().path());
        let transaction = agent.detached_transaction("Call", &name, parent);
        inject_context(&transaction.context(), request.headers_mut());
        (request, transaction)
    });
    async move {
        let (request, mut transaction) = prepared?;
        transaction.restart();
        let result = client.execute(request).await;
        match &result {
            Ok(response) if response.status().is_server_error() => {
                transaction.set_status_error(response.status().to_string());
            }
            Ok(_) => {}
            Err(error) => transaction.set_status_error(error.to_string()),
        }
        transaction.finish();
        result
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use axum::http::StatusCode as HttpStatus;
    use axum::routing::get;
    use axum::{Extension, Router};
    use caracal_proto::AgentReport;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use tower::ServiceExt as _;

    use super::*;
    use crate::context::{new_span_id, new_trace_id};
    use crate::exporter::InMemoryExporter;
    use crate::{AgentBuilder, SpanKind};

    fn start_agent(service: &str, sample_ratio: f64) -> (Agent, InMemoryExporter) {
        let exporter = InMemoryExporter::new();
        let agent = AgentBuilder::from_env(&HashMap::new())
            .service_name(service)
            .sample_ratio(sample_ratio)
            .exporter(exporter.clone())
            .start();
        (agent, exporter)
    }

    /// Count and errors per (name, kind, status).
    type Counts = HashMap<(String, u32, u32), (u64, u64)>;

    /// Shuts `agent` down (flushing) and returns, summed over its reports, the counts
    /// and errors per (name, kind, status), and the kept spans.
    fn flush(agent: &Agent, exporter: &InMemoryExporter) -> (Counts, Vec<Span>) {
        agent.shutdown(Duration::from_secs(5)).expect("flush");
        let reports: Vec<AgentReport> = exporter.take_reports();
        let mut counts = HashMap::new();
        for aggregate in reports.iter().flat_map(|report| &report.aggregates) {
            let entry = counts
                .entry((aggregate.name.clone(), aggregate.kind, aggregate.status))
                .or_insert((0, 0));
            entry.0 += aggregate.count;
            entry.1 += aggregate.errors;
        }
        let spans = reports
            .into_iter()
            .flat_map(|report| report.kept_spans)
            .flat_map(|resource| resource.scope_spans)
            .flat_map(|scope| scope.spans)
            .collect();
        (counts, spans)
    }

    fn router(agent: Agent) -> Router {
        Router::new()
            .route(
                "/orders/{id}",
                get(|Extension(context): Extension<TraceContext>| async move {
                    context.to_traceparent()
                }),
            )
            .route(
                "/fail",
                get(|| async { (HttpStatus::INTERNAL_SERVER_ERROR, "boom") }),
            )
            .layer(AgentLayer::new(agent))
    }

    async fn get_body(router: &Router, uri: &str, traceparent: Option<&str>) -> (u16, String) {
        let mut request = Request::get(uri);
        if let Some(traceparent) = traceparent {
            request = request.header(TRACEPARENT, traceparent);
        }
        let response = router
            .clone()
            .oneshot(request.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn layer_records_server_transactions_by_route_and_continues_traces() {
        let (agent, exporter) = start_agent("api", 0.0);
        let router = router(agent.clone());
        let (status, unsampled) = get_body(&router, "/orders/1", None).await;
        assert_eq!(status, 200);
        let unsampled = TraceContext::from_traceparent(&unsampled).expect("context in extensions");
        assert!(!unsampled.sampled);

        let parent = TraceContext {
            trace_id: new_trace_id(),
            span_id: new_span_id(),
            sampled: true,
        };
        let (_, joined) = get_body(&router, "/orders/2", Some(&parent.to_traceparent())).await;
        let joined = TraceContext::from_traceparent(&joined).unwrap();
        assert_eq!((joined.trace_id, joined.sampled), (parent.trace_id, true));
        assert_eq!(get_body(&router, "/fail", None).await.0, 500);

        let (counts, spans) = flush(&agent, &exporter);
        let server = SpanKind::Server as u32;
        assert_eq!(
            counts.get(&("GET /orders/{id}".to_owned(), server, 0)),
            Some(&(2, 0)),
            "{counts:?}"
        );
        assert_eq!(
            counts.get(&("GET /fail".to_owned(), server, 2)),
            Some(&(1, 1)),
            "{counts:?}"
        );
        // Kept: the request with a sampled parent and the failed one.
        assert_eq!(spans.len(), 2, "{spans:?}");
        let kept = spans
            .iter()
            .find(|span| span.name == "GET /orders/{id}")
            .unwrap();
        assert_eq!(kept.trace_id, parent.trace_id.0);
        assert_eq!(kept.parent_span_id, parent.span_id.0);
        assert_eq!(kept.span_id, joined.span_id.0);
        assert_eq!(kept.kind, SpanKind::Server as i32);
        let failed = spans.iter().find(|span| span.name == "GET /fail").unwrap();
        assert_eq!(failed.status.as_ref().unwrap().code, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_helper_propagates_context_to_the_server() {
        let (server_agent, server_exporter) = start_agent("orders", 0.0);
        let (client_agent, client_exporter) = start_agent("gateway", 1.0);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = router(server_agent.clone());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();

        let response = send(
            &client_agent,
            "orders",
            client.get(format!("http://{address}/orders/7")),
        )
        .await
        .unwrap();
        let seen = TraceContext::from_traceparent(&response.text().await.unwrap()).unwrap();
        let failed = send(
            &client_agent,
            "orders",
            client.get(format!("http://{address}/fail")),
        )
        .await
        .unwrap();
        assert_eq!(failed.status().as_u16(), 500);
        // Nothing listens on port 1: a transport error.
        assert!(
            send(&client_agent, "nowhere", client.get("http://127.0.0.1:1/"))
                .await
                .is_err()
        );
        // Within a thread-bound transaction, `inject_headers` uses its context.
        let mut headers = HeaderMap::new();
        {
            let root = client_agent.transaction("Job", "sync");
            inject_headers(&client_agent, &mut headers);
            assert_eq!(extract(&headers), Some(root.context()));
        }
        server.abort();

        let (client_counts, client_spans) = flush(&client_agent, &client_exporter);
        let (_, server_spans) = flush(&server_agent, &server_exporter);
        let client_kind = SpanKind::Client as u32;
        assert_eq!(
            client_counts.get(&("orders:GET /orders/7".to_owned(), client_kind, 0)),
            Some(&(1, 0)),
            "{client_counts:?}"
        );
        assert_eq!(
            client_counts.get(&("orders:GET /fail".to_owned(), client_kind, 2)),
            Some(&(1, 1))
        );
        assert_eq!(
            client_counts.get(&("nowhere:GET /".to_owned(), client_kind, 2)),
            Some(&(1, 1))
        );
        let call = client_spans
            .iter()
            .find(|span| span.name == "orders:GET /orders/7")
            .unwrap();
        let served = server_spans
            .iter()
            .find(|span| span.name == "GET /orders/{id}")
            .expect("the sampled flag keeps the server's part");
        assert_eq!(served.trace_id, call.trace_id);
        assert_eq!(served.parent_span_id, call.span_id);
        assert_eq!(seen.trace_id.0.to_vec(), call.trace_id);
        assert_eq!(call.kind, SpanKind::Client as i32);
    }
}
