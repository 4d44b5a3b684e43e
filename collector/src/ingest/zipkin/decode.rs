//! Zipkin v2 JSON into OTLP, mapped as the OpenTelemetry Collector's zipkin receiver
//! maps it, so the spans then take the same path as OTLP's.
//!
//! | Zipkin v2 | OTLP |
//! | --- | --- |
//! | `traceId` (1 to 32 hex digits, left-padded: 64-bit ids become 128-bit) | `trace_id` |
//! | `id`, `parentId` (a parent equal to the span itself means none) | `span_id`, `parent_span_id` |
//! | `name`, `kind` (`CLIENT`, `SERVER`, `PRODUCER`, `CONSUMER`; else unspecified) | `name`, `kind` |
//! | `timestamp`, `duration` (µs) | `start_time_unix_nano`, `end_time_unix_nano` |
//! | `localEndpoint.serviceName` (missing: `unknown_service`) | resource `service.name`; spans are grouped by it |
//! | `localEndpoint.ipv4`/`ipv6`, `port` | `net.host.ip`, `net.host.port` |
//! | `remoteEndpoint.serviceName` | `peer.service` (so dependency edges work) |
//! | `remoteEndpoint.ipv4`/`ipv6`, `port` | `net.peer.ip`, `net.peer.port` |
//! | `tags` (strings; numbers and booleans as their text) | string attributes |
//! | `tags.error` | status `ERROR`, the tag's value as its message |
//! | `tags["otel.status_code"]`, `tags["otel.status_description"]` | status (what OpenTelemetry's Zipkin exporter writes) |
//! | `annotations` | events |
//! | `debug`, `shared` (when true) | `zipkin.debug`, `zipkin.shared` |
//!
//! Tags win over endpoint attributes of the same name. An id that is not hex becomes a
//! byte string of a length no id has, so validation refuses its span with the reason
//! for that id (`invalid_trace_id`, `invalid_span_id`, `invalid_parent_span_id`); a
//! list element that is not a span object at all is refused as `malformed_span`.

use std::collections::{hash_map::Entry, BTreeMap, HashMap};
use std::fmt;

use caracal_model::ids::{IdError, SpanId, TraceId};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{any_value::Value, AnyValue, KeyValue},
    resource::v1::Resource,
    trace::v1::{
        span::{Event, SpanKind},
        status::StatusCode,
        ResourceSpans, ScopeSpans, Span, Status,
    },
};
use serde::{de, Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::{ingest::DecodeNotes, sink::flatten::UNKNOWN_SERVICE, IngestError};

/// Stands for an id that is not hex: one byte, a length no id has, so validation
/// refuses the span with the reason for that id.
const UNREADABLE_ID: [u8; 1] = [0xff];

/// Nanoseconds per Zipkin microsecond.
const NANOS_PER_MICRO: u64 = 1_000;

/// Decodes a Zipkin v2 JSON list into one OTLP request, one resource per local service.
///
/// Fails only when the body is not a JSON array; elements that are not spans are
/// counted in the notes and left out.
pub fn decode_spans(body: &[u8]) -> Result<(ExportTraceServiceRequest, DecodeNotes), IngestError> {
    let elements: Vec<&RawValue> = serde_json::from_slice(body).map_err(|error| {
        IngestError::Malformed(format!(
            "invalid Zipkin JSON, expected an array of v2 spans: {error}"
        ))
    })?;
    let mut services = ByService::default();
    let mut notes = DecodeNotes::default();
    for (index, element) in elements.iter().enumerate() {
        match serde_json::from_str::<ZipkinSpan>(element.get()) {
            Ok(span) => {
                let (service, span) = span.into_otlp();
                services.push(service, span);
            }
            Err(error) => notes.refuse(&format!("span {index}"), &error.to_string(), 1),
        }
    }
    let request = ExportTraceServiceRequest {
        resource_spans: services.resource_spans,
    };
    Ok((request, notes))
}

/// A Zipkin v2 span; every field may be missing or `null`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ZipkinSpan {
    trace_id: Option<String>,
    id: Option<String>,
    parent_id: Option<String>,
    name: Option<String>,
    kind: Option<String>,
    timestamp: Option<u64>,
    duration: Option<u64>,
    local_endpoint: Option<Endpoint>,
    remote_endpoint: Option<Endpoint>,
    annotations: Option<Vec<Annotation>>,
    tags: Option<BTreeMap<String, TagValue>>,
    debug: Option<bool>,
    shared: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Endpoint {
    service_name: Option<String>,
    ipv4: Option<String>,
    ipv6: Option<String>,
    port: Option<i64>,
}

impl Endpoint {
    fn service_name(&self) -> Option<&str> {
        self.service_name.as_deref().filter(|name| !name.is_empty())
    }

    /// IPv4 wins over IPv6, as in the OpenTelemetry Collector.
    fn ip(&self) -> Option<&str> {
        [&self.ipv4, &self.ipv6]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .find(|ip| !ip.is_empty())
    }

    fn port(&self) -> Option<i64> {
        self.port.filter(|port| *port > 0)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Annotation {
    timestamp: u64,
    value: String,
}

/// A tag value: Zipkin's are strings, but numbers and booleans are taken as their text,
/// and `null` as no tag.
#[derive(Debug)]
struct TagValue(Option<String>);

impl<'de> Deserialize<'de> for TagValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TagVisitor;

        impl de::Visitor<'_> for TagVisitor {
            type Value = TagValue;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a string, number or boolean")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<TagValue, E> {
                Ok(TagValue(Some(text.to_owned())))
            }

            fn visit_string<E: de::Error>(self, text: String) -> Result<TagValue, E> {
                Ok(TagValue(Some(text)))
            }

            fn visit_bool<E: de::Error>(self, value: bool) -> Result<TagValue, E> {
                Ok(TagValue(Some(value.to_string())))
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<TagValue, E> {
                Ok(TagValue(Some(value.to_string())))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<TagValue, E> {
                Ok(TagValue(Some(value.to_string())))
            }

            fn visit_f64<E: de::Error>(self, value: f64) -> Result<TagValue, E> {
                Ok(TagValue(Some(value.to_string())))
            }

            fn visit_unit<E: de::Error>(self) -> Result<TagValue, E> {
                Ok(TagValue(None))
            }
        }

        deserializer.deserialize_any(TagVisitor)
    }
}

fn trace_id_bytes(text: Option<&str>) -> Vec<u8> {
    match text.map(TraceId::from_hex) {
        Some(Ok(id)) => id.0.to_vec(),
        // Missing, not hex or all zero: empty, which validation refuses.
        _ => Vec::new(),
    }
}

fn span_id_bytes(text: Option<&str>) -> Vec<u8> {
    match text.map(SpanId::from_hex) {
        Some(Ok(id)) => id.0.to_vec(),
        _ => Vec::new(),
    }
}

/// No parent when missing, empty, all zero or the span itself; unreadable when not hex.
fn parent_id_bytes(text: Option<&str>, span_id: &[u8]) -> Vec<u8> {
    match text.filter(|text| !text.is_empty()).map(SpanId::from_hex) {
        Some(Ok(id)) if id.0 != span_id => id.0.to_vec(),
        Some(Ok(_)) | Some(Err(IdError::AllZero)) | None => Vec::new(),
        Some(Err(_)) => UNREADABLE_ID.to_vec(),
    }
}

fn span_kind(kind: Option<&str>) -> SpanKind {
    let Some(kind) = kind else {
        return SpanKind::Unspecified;
    };
    [
        ("CLIENT", SpanKind::Client),
        ("SERVER", SpanKind::Server),
        ("PRODUCER", SpanKind::Producer),
        ("CONSUMER", SpanKind::Consumer),
    ]
    .into_iter()
    .find(|(name, _)| kind.eq_ignore_ascii_case(name))
    .map_or(SpanKind::Unspecified, |(_, kind)| kind)
}

fn attribute(key: impl Into<String>, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// Adds an attribute unless a tag already set that key.
fn push_absent(attributes: &mut Vec<KeyValue>, key: &str, value: Value) {
    if !attributes.iter().any(|existing| existing.key == key) {
        attributes.push(attribute(key, value));
    }
}

/// The status the tags ask for: `error` (Brave's convention: its value is the
/// message), else OpenTelemetry's `otel.status_code` and `otel.status_description`.
fn status(
    error_opt: Option<String>,
    code_opt: Option<String>,
    description_opt: Option<String>,
) -> Option<Status> {
    if let Some(message) = error_opt {
        return Some(Status {
            code: StatusCode::Error as i32,
            message,
        });
    }
    let code = match code_opt?.to_ascii_uppercase().as_str() {
        "ERROR" | "STATUS_CODE_ERROR" => StatusCode::Error,
        "OK" | "STATUS_CODE_OK" => StatusCode::Ok,
        _ => return None,
    };
    Some(Status {
        code: code as i32,
        message: description_opt.unwrap_or_default(),
    })
}

impl ZipkinSpan {
    /// The span's local service and the span as OTLP.
    fn into_otlp(self) -> (String, Span) {
        let trace_id = trace_id_bytes(self.trace_id.as_deref());
        let span_id = span_id_bytes(self.id.as_deref());
        let parent_span_id = parent_id_bytes(self.parent_id.as_deref(), &span_id);
        let start_time_unix_nano = self.timestamp.unwrap_or(0).saturating_mul(NANOS_PER_MICRO);
        let end_time_unix_nano = start_time_unix_nano
            .saturating_add(self.duration.unwrap_or(0).saturating_mul(NANOS_PER_MICRO));

        let tags = self.tags.unwrap_or_default();
        let mut attributes = Vec::with_capacity(tags.len() + 7);
        let (mut error_opt, mut code_opt, mut description_opt) = (None, None, None);
        for (key, TagValue(value)) in tags {
            let Some(value) = value else { continue };
            match key.as_str() {
                "error" => error_opt = Some(value),
                "otel.status_code" => code_opt = Some(value),
                "otel.status_description" => description_opt = Some(value),
                _ => attributes.push(attribute(key, Value::StringValue(value))),
            }
        }
        let local = self.local_endpoint.unwrap_or_default();
        if let Some(ip) = local.ip() {
            push_absent(
                &mut attributes,
                "net.host.ip",
                Value::StringValue(ip.into()),
            );
        }
        if let Some(port) = local.port() {
            push_absent(&mut attributes, "net.host.port", Value::IntValue(port));
        }
        if let Some(remote) = &self.remote_endpoint {
            if let Some(peer) = remote.service_name() {
                push_absent(
                    &mut attributes,
                    "peer.service",
                    Value::StringValue(peer.into()),
                );
            }
            if let Some(ip) = remote.ip() {
                push_absent(
                    &mut attributes,
                    "net.peer.ip",
                    Value::StringValue(ip.into()),
                );
            }
            if let Some(port) = remote.port() {
                push_absent(&mut attributes, "net.peer.port", Value::IntValue(port));
            }
        }
        for (key, flag) in [("zipkin.debug", self.debug), ("zipkin.shared", self.shared)] {
            if flag == Some(true) {
                push_absent(&mut attributes, key, Value::BoolValue(true));
            }
        }

        let events = self
            .annotations
            .unwrap_or_default()
            .into_iter()
            .map(|annotation| Event {
                time_unix_nano: annotation.timestamp.saturating_mul(NANOS_PER_MICRO),
                name: annotation.value,
                ..Default::default()
            })
            .collect();
        let span = Span {
            trace_id,
            span_id,
            parent_span_id,
            name: self.name.unwrap_or_default(),
            kind: span_kind(self.kind.as_deref()) as i32,
            start_time_unix_nano,
            end_time_unix_nano,
            attributes,
            events,
            status: status(error_opt, code_opt, description_opt),
            ..Default::default()
        };
        let service = local.service_name().unwrap_or(UNKNOWN_SERVICE).to_owned();
        (service, span)
    }
}

/// Spans grouped into one resource per service, in order of first appearance.
#[derive(Debug, Default)]
struct ByService {
    positions: HashMap<String, usize>,
    resource_spans: Vec<ResourceSpans>,
}

impl ByService {
    fn push(&mut self, service: String, span: Span) {
        let position = match self.positions.entry(service) {
            Entry::Occupied(entry) => *entry.get(),
            Entry::Vacant(entry) => {
                let name = Value::StringValue(entry.key().clone());
                self.resource_spans.push(ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![attribute("service.name", name)],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans::default()],
                    ..Default::default()
                });
                *entry.insert(self.resource_spans.len() - 1)
            }
        };
        let scope_spans = self
            .resource_spans
            .get_mut(position)
            .and_then(|resource_spans| resource_spans.scope_spans.first_mut());
        if let Some(scope_spans) = scope_spans {
            scope_spans.spans.push(span);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;
    use crate::ingest::validate::{validate, AttributeLimits, RejectReason};

    fn text(value: Option<&AnyValue>) -> String {
        match value.and_then(|value| value.value.as_ref()) {
            Some(Value::StringValue(text)) => format!("{text:?}"),
            Some(Value::IntValue(number)) => number.to_string(),
            Some(Value::BoolValue(flag)) => flag.to_string(),
            other => format!("{other:?}"),
        }
    }

    /// One line per resource and per span: everything the mapping sets.
    fn render(request: &ExportTraceServiceRequest) -> String {
        let mut out = String::new();
        for resource_spans in &request.resource_spans {
            let resource = resource_spans.resource.as_ref().unwrap();
            let _ = writeln!(
                out,
                "resource {}",
                text(resource.attributes[0].value.as_ref())
            );
            for span in &resource_spans.scope_spans[0].spans {
                let _ = write!(
                    out,
                    "  {} {} parent={} {:?} {:?} {}..{}",
                    hex(&span.trace_id),
                    hex(&span.span_id),
                    hex(&span.parent_span_id),
                    span.name,
                    SpanKind::try_from(span.kind).unwrap(),
                    span.start_time_unix_nano,
                    span.end_time_unix_nano,
                );
                if let Some(status) = &span.status {
                    let _ = write!(out, " status={}:{:?}", status.code, status.message);
                }
                for attribute in &span.attributes {
                    let _ = write!(out, " {}={}", attribute.key, text(attribute.value.as_ref()));
                }
                for event in &span.events {
                    let _ = write!(out, " event@{}={:?}", event.time_unix_nano, event.name);
                }
                out.push('\n');
            }
        }
        out
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    fn check(json: &str, expected: &str) {
        let (request, notes) = decode_spans(json.as_bytes()).unwrap();
        assert_eq!(notes, DecodeNotes::default());
        let rendered = render(&request);
        assert_eq!(rendered.trim(), expected.trim(), "\n{rendered}");
    }

    #[test]
    fn maps_every_field() {
        check(
            r#"[{
                "traceId": "19F84F102048E047", "id": "5d532ef6fed52445",
                "parentId": "19f84f102048e047", "kind": "CLIENT", "name": "insert",
                "timestamp": 1541485537488973, "duration": 2033,
                "localEndpoint": {"serviceName": "bootifulmeters", "ipv4": "172.23.250.16",
                                  "ipv6": "::1", "port": 8080},
                "remoteEndpoint": {"serviceName": "app_db", "ipv6": "fe80::1", "port": 5432},
                "tags": {"sql.query": "insert into t", "rows": 3, "cached": false,
                         "gone": null, "error": "duplicate key"},
                "annotations": [{"timestamp": 1541485537489000, "value": "ws"}],
                "debug": true, "shared": false, "unknownField": [1, 2]
            }]"#,
            r#"
resource "bootifulmeters"
  000000000000000019f84f102048e047 5d532ef6fed52445 parent=19f84f102048e047 "insert" Client 1541485537488973000..1541485537491006000 status=2:"duplicate key" cached="false" rows="3" sql.query="insert into t" net.host.ip="172.23.250.16" net.host.port=8080 peer.service="app_db" net.peer.ip="fe80::1" net.peer.port=5432 zipkin.debug=true event@1541485537489000000="ws"
"#,
        );
    }

    #[test]
    fn groups_by_local_service_in_order_of_appearance() {
        check(
            r#"[
              {"traceId": "a", "id": "1", "kind": "SERVER", "name": "get", "timestamp": 1,
               "localEndpoint": {"serviceName": "front"}, "shared": true},
              {"traceId": "b", "id": "2", "parentId": "2", "name": "no service", "timestamp": 2},
              {"traceId": "a", "id": "3", "parentId": "1", "kind": "producer", "timestamp": 3,
               "localEndpoint": {"serviceName": "front"}, "tags": {"net.host.ip": "tagged"},
               "remoteEndpoint": {"serviceName": "", "ipv4": "10.0.0.1"}},
              {"traceId": "0123456789abcdef0123456789abcdef", "id": "4", "kind": "CONSUMER",
               "timestamp": 4, "duration": 1, "localEndpoint": {"serviceName": ""},
               "tags": {"otel.status_code": "ERROR", "otel.status_description": "boom"}},
              {"traceId": "a", "id": "5", "kind": "odd", "timestamp": 5,
               "localEndpoint": {"serviceName": "back"},
               "tags": {"otel.status_code": "OK"}}
            ]"#,
            r#"
resource "front"
  0000000000000000000000000000000a 0000000000000001 parent= "get" Server 1000..1000 zipkin.shared=true
  0000000000000000000000000000000a 0000000000000003 parent=0000000000000001 "" Producer 3000..3000 net.host.ip="tagged" net.peer.ip="10.0.0.1"
resource "unknown_service"
  0000000000000000000000000000000b 0000000000000002 parent= "no service" Unspecified 2000..2000
  0123456789abcdef0123456789abcdef 0000000000000004 parent= "" Consumer 4000..5000 status=2:"boom"
resource "back"
  0000000000000000000000000000000a 0000000000000005 parent= "" Unspecified 5000..5000 status=1:""
"#,
        );
    }

    /// Decodes `json`, validates it, and returns what was kept and refused.
    fn validated(json: &str) -> (usize, Vec<(RejectReason, u64)>, DecodeNotes) {
        let (mut request, notes) = decode_spans(json.as_bytes()).unwrap();
        let mut report = validate(&mut request, u64::MAX, &AttributeLimits::default());
        report.add_malformed(&notes);
        (
            report.num_accepted,
            report.rejected.into_iter().collect(),
            notes,
        )
    }

    #[test]
    fn bad_spans_are_refused_one_by_one_with_their_reason() {
        let start = r#""timestamp": 1541485537488973"#;
        let json = format!(
            r#"[
              {{"traceId": "1", "id": "1", {start}}},
              {{"traceId": "xyz", "id": "1", {start}}},
              {{"traceId": "000000000000000000", "id": "1", {start}}},
              {{"traceId": "123456789012345678901234567890123", "id": "1", {start}}},
              {{"id": "1", {start}}},
              {{"traceId": "1", "id": "0000000000000000", {start}}},
              {{"traceId": "1", "id": "12345678901234567", {start}}},
              {{"traceId": "1", "id": "2", "parentId": "not hex", {start}}},
              {{"traceId": "1", "id": "2", "parentId": "0000000000000000", {start}}},
              {{"traceId": "1", "id": "3"}},
              {{"traceId": "1", "id": "4", "timestamp": "yesterday"}},
              42,
              {{"traceId": "1", "id": "5", "tags": {{"nested": {{"no": 1}}}}, {start}}}
            ]"#
        );
        let (num_accepted, rejected, notes) = validated(&json);
        assert_eq!(num_accepted, 2);
        assert_eq!(
            rejected,
            vec![
                (RejectReason::MalformedSpan, 3),
                (RejectReason::InvalidTraceId, 4),
                (RejectReason::InvalidSpanId, 2),
                (RejectReason::InvalidParentSpanId, 1),
                (RejectReason::TimestampOutOfRange, 1),
            ]
        );
        assert_eq!(notes.num_malformed_spans, 3);
        let detail = notes.first_malformed_opt.unwrap();
        assert!(detail.starts_with("span 10: invalid type"), "{detail}");
    }

    #[test]
    fn a_body_that_is_not_a_json_array_is_malformed() {
        for body in ["", "{", r#"{"traceId": "1"}"#, "[1, ", "null", "\u{0}"] {
            let error = decode_spans(body.as_bytes()).unwrap_err();
            assert!(
                matches!(&error, IngestError::Malformed(message) if message.contains("Zipkin JSON")),
                "{body:?}: {error}"
            );
        }
        let (request, notes) = decode_spans(b" [ ] ").unwrap();
        assert!(request.resource_spans.is_empty());
        assert_eq!(notes, DecodeNotes::default());
    }
}
