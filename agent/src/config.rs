//! Agent configuration: defaults, then `CARACAL_*` environment variables, then code.
//!
//! | variable                          | setting                                      |
//! |-----------------------------------|----------------------------------------------|
//! | `CARACAL_SERVICE_NAME`            | [`AgentBuilder::service_name`] (falls back to `OTEL_SERVICE_NAME`) |
//! | `CARACAL_OTLP_GRPC_ADDR`          | [`AgentBuilder::collector_addrs`], comma-separated |
//! | `CARACAL_AGENT_SAMPLE_RATIO`      | [`AgentBuilder::sample_ratio`]               |
//! | `CARACAL_AGENT_MAX_KEYS`          | [`AgentBuilder::max_keys`]                   |
//! | `CARACAL_AGENT_MAX_PENDING_BYTES` | [`AgentBuilder::max_pending_bytes`]          |
//! | `CARACAL_AGENT_TOKEN`             | [`AgentBuilder::token`]                      |
//!
//! A value that does not parse is ignored with a warning; recording never fails because
//! of configuration.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::exporter::ReportExporter;
use crate::Agent;

/// Default collector address (the collector's OTLP/gRPC port).
pub const DEFAULT_COLLECTOR_ADDR: &str = "127.0.0.1:4317";
/// Service name when none is configured (the OpenTelemetry convention).
pub const DEFAULT_SERVICE_NAME: &str = "unknown_service";
/// Default share of ordinary traces kept whole.
pub const DEFAULT_SAMPLE_RATIO: f64 = 0.01;
/// Default cap on distinct keys per table (operations, events, metrics).
pub const DEFAULT_MAX_KEYS: usize = 1_000;
/// Default memory bound of reports waiting for the collector (encoded size).
pub const DEFAULT_MAX_PENDING_BYTES: usize = 8 * 1024 * 1024;
/// Default cap on spans kept per report; more are dropped and counted.
pub const DEFAULT_MAX_KEPT_SPANS: usize = 10_000;
/// Default number of recordings an interval needs before its p99 is trusted as the
/// slow threshold of an operation.
pub const DEFAULT_LEARN_MIN_COUNT: u64 = 100;
/// Default cap on spans buffered per local trace; more are aggregated but not kept.
pub const DEFAULT_MAX_SPANS_PER_TRACE: usize = 1_000;
/// Default cap on backtraces captured per interval by [`Agent::record_error`].
pub const DEFAULT_MAX_BACKTRACES: u32 = 100;

/// The resolved configuration of one agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `service.name` of everything this agent reports.
    pub service_name: String,
    /// Unique id of this agent instance; default `{host}-{pid}-{random}`.
    pub instance: String,
    /// Host name; default from `/proc/sys/kernel/hostname` or `HOSTNAME`.
    pub host: String,
    /// Collector addresses (`host:port` or `http://host:port`), tried in order with
    /// failover.
    pub collector_addrs: Vec<String>,
    /// Share (0.0 to 1.0) of traces kept whole besides errors, slow and sampled ones.
    pub sample_ratio: f64,
    /// Slow thresholds by operation name; other operations learn theirs.
    pub slow_thresholds: HashMap<String, Duration>,
    /// Recordings an interval needs before its p99 becomes the learned threshold.
    pub learn_min_count: u64,
    /// Distinct keys per table before new keys fold into `other`.
    pub max_keys: usize,
    /// Bytes of encoded reports held while no collector answers; oldest dropped first.
    pub max_pending_bytes: usize,
    /// Spans kept per report; beyond, kept spans are dropped and counted.
    pub max_kept_spans: usize,
    /// Spans buffered per local trace; beyond, spans are aggregated only.
    pub max_spans_per_trace: usize,
    /// Backtraces captured per interval by [`Agent::record_error`].
    pub max_backtraces: u32,
    /// Ingest token sent as `authorization: Bearer <token>` when the collectors
    /// require one.
    pub token: Option<AgentToken>,
}

/// An ingest token; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentToken(pub String);

impl std::fmt::Debug for AgentToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("AgentToken(<redacted>)")
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        let host = host_name();
        let instance = format!(
            "{host}-{}-{:08x}",
            std::process::id(),
            crate::context::random_u64() as u32
        );
        Self {
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            instance,
            host,
            collector_addrs: vec![DEFAULT_COLLECTOR_ADDR.to_owned()],
            sample_ratio: DEFAULT_SAMPLE_RATIO,
            slow_thresholds: HashMap::new(),
            learn_min_count: DEFAULT_LEARN_MIN_COUNT,
            max_keys: DEFAULT_MAX_KEYS,
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
            max_kept_spans: DEFAULT_MAX_KEPT_SPANS,
            max_spans_per_trace: DEFAULT_MAX_SPANS_PER_TRACE,
            max_backtraces: DEFAULT_MAX_BACKTRACES,
            token: None,
        }
    }
}

impl AgentConfig {
    /// Applies the `CARACAL_*` variables found in `vars`.
    pub fn apply_env(&mut self, vars: &HashMap<String, String>) {
        let get = |name: &str| {
            vars.get(name)
                .map(|value| value.trim())
                .filter(|value| !value.is_empty())
        };
        if let Some(name) = get("CARACAL_SERVICE_NAME").or_else(|| get("OTEL_SERVICE_NAME")) {
            self.service_name = name.to_owned();
        }
        if let Some(addrs) = get("CARACAL_OTLP_GRPC_ADDR") {
            let addrs = split_addrs(addrs);
            if !addrs.is_empty() {
                self.collector_addrs = addrs;
            }
        }
        if let Some(ratio) = parse(
            get("CARACAL_AGENT_SAMPLE_RATIO"),
            "CARACAL_AGENT_SAMPLE_RATIO",
        ) {
            self.sample_ratio = f64::clamp(ratio, 0.0, 1.0);
        }
        if let Some(max_keys) = parse(get("CARACAL_AGENT_MAX_KEYS"), "CARACAL_AGENT_MAX_KEYS") {
            self.max_keys = max_keys;
        }
        if let Some(bytes) = parse(
            get("CARACAL_AGENT_MAX_PENDING_BYTES"),
            "CARACAL_AGENT_MAX_PENDING_BYTES",
        ) {
            self.max_pending_bytes = bytes;
        }
        if let Some(token) = get("CARACAL_AGENT_TOKEN") {
            self.token = Some(AgentToken(token.to_owned()));
        }
    }
}

fn parse<T: std::str::FromStr>(value: Option<&str>, name: &str) -> Option<T> {
    let value = value?;
    match value.parse() {
        Ok(parsed) => Some(parsed),
        Err(_) => {
            tracing::warn!(variable = name, value, "ignoring invalid agent setting");
            None
        }
    }
}

/// Splits a comma-separated address list.
pub(crate) fn split_addrs(addrs: &str) -> Vec<String> {
    addrs
        .split(',')
        .map(str::trim)
        .filter(|addr| !addr.is_empty())
        .map(str::to_owned)
        .collect()
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Builds an [`Agent`]: [`Agent::builder`] starts from the defaults and the process
/// environment; each method then overrides one setting.
#[derive(Debug, Clone)]
pub struct AgentBuilder {
    pub(crate) config: AgentConfig,
    pub(crate) exporter: Option<Arc<dyn ReportExporter>>,
}

impl AgentBuilder {
    /// Defaults, then the process environment.
    pub(crate) fn from_process_env() -> Self {
        Self::from_env(&std::env::vars().collect())
    }

    /// Defaults, then the variables in `vars` (instead of the process environment).
    pub fn from_env(vars: &HashMap<String, String>) -> Self {
        let mut config = AgentConfig::default();
        config.apply_env(vars);
        Self {
            config,
            exporter: None,
        }
    }

    /// Sets the service name.
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.config.service_name = name.into();
        self
    }

    /// Sets the instance id (unique per process; the collector dedups by it).
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.config.instance = instance.into();
        self
    }

    /// Sets the host name.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.config.host = host.into();
        self
    }

    /// Sets the collector addresses, tried in order with failover.
    pub fn collector_addrs<S: Into<String>>(mut self, addrs: impl IntoIterator<Item = S>) -> Self {
        self.config.collector_addrs = addrs.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the ingest token sent to the collectors.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.config.token = Some(AgentToken(token.into()));
        self
    }

    /// Sets the share of ordinary traces kept whole (clamped to 0.0..=1.0).
    pub fn sample_ratio(mut self, ratio: f64) -> Self {
        self.config.sample_ratio = ratio.clamp(0.0, 1.0);
        self
    }

    /// Fixes the slow threshold of one operation (by name) instead of learning it.
    pub fn slow_threshold(mut self, operation: impl Into<String>, threshold: Duration) -> Self {
        self.config
            .slow_thresholds
            .insert(operation.into(), threshold);
        self
    }

    /// Sets how many recordings an interval needs before its p99 is trusted.
    pub fn learn_min_count(mut self, count: u64) -> Self {
        self.config.learn_min_count = count;
        self
    }

    /// Sets the cardinality cap per table.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.config.max_keys = max_keys;
        self
    }

    /// Sets the memory bound of undelivered reports.
    pub fn max_pending_bytes(mut self, bytes: usize) -> Self {
        self.config.max_pending_bytes = bytes;
        self
    }

    /// Sets the cap on spans kept per report.
    pub fn max_kept_spans(mut self, spans: usize) -> Self {
        self.config.max_kept_spans = spans;
        self
    }

    /// Sets the cap on spans buffered per local trace.
    pub fn max_spans_per_trace(mut self, spans: usize) -> Self {
        self.config.max_spans_per_trace = spans;
        self
    }

    /// Sends reports to `exporter` instead of the collectors over gRPC (tests, custom
    /// transports). See [`InMemoryExporter`](crate::exporter::InMemoryExporter).
    pub fn exporter(mut self, exporter: impl ReportExporter) -> Self {
        self.exporter = Some(Arc::new(exporter));
        self
    }

    /// The configuration as resolved so far.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// Creates the agent and starts its background reporter thread.
    pub fn start(self) -> Agent {
        Agent::start(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn the_token_comes_from_the_environment_and_never_prints() {
        let builder = AgentBuilder::from_env(&vars(&[("CARACAL_AGENT_TOKEN", " t0k3n ")]));
        assert_eq!(builder.config().token, Some(AgentToken("t0k3n".into())));
        assert!(!format!("{:?}", builder.config()).contains("t0k3n"));
        assert!(crate::exporter::GrpcExporter::new(&["127.0.0.1:1".into()])
            .unwrap()
            .with_token("bad\ntoken")
            .is_err());
    }

    #[test]
    fn defaults_then_env_then_code() {
        let builder = AgentBuilder::from_env(&vars(&[]));
        assert_eq!(builder.config().service_name, DEFAULT_SERVICE_NAME);
        assert_eq!(builder.config().collector_addrs, [DEFAULT_COLLECTOR_ADDR]);

        let env = vars(&[
            ("OTEL_SERVICE_NAME", "otel"),
            ("CARACAL_OTLP_GRPC_ADDR", " a:1, ,http://b:2 "),
            ("CARACAL_AGENT_SAMPLE_RATIO", "0.5"),
            ("CARACAL_AGENT_MAX_KEYS", "not a number"),
        ]);
        let builder = AgentBuilder::from_env(&env);
        assert_eq!(builder.config().service_name, "otel");
        assert_eq!(builder.config().collector_addrs, ["a:1", "http://b:2"]);
        assert_eq!(builder.config().sample_ratio, 0.5);
        assert_eq!(builder.config().max_keys, DEFAULT_MAX_KEYS);

        let mut env = env;
        env.insert("CARACAL_SERVICE_NAME".into(), "caracal".into());
        let builder = AgentBuilder::from_env(&env)
            .service_name("code")
            .sample_ratio(7.0);
        assert_eq!(builder.config().service_name, "code");
        assert_eq!(builder.config().sample_ratio, 1.0);
        assert_eq!(
            AgentBuilder::from_env(&env).config().service_name,
            "caracal"
        );
    }
}
