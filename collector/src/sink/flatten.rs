//! OTLP spans flattened into [`SpanRow`]s, reusing buffers across the spans of a request.

use caracal_model::{
    attributes::AttributeColumns,
    bucket::unix_seconds,
    ids::parent_span_id,
    span::{SpanKind, StatusCode},
};
use caracal_store::rows::SpanRow;
use opentelemetry_proto::tonic::{
    common::v1::{any_value::Value, InstrumentationScope, KeyValue},
    trace::v1::{ResourceSpans, Span},
};

use crate::aggregate::ChildType;

/// Service name used when a resource has none, as the OpenTelemetry SDKs do.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// Reusable column buffers for the spans of one request.
#[derive(Debug, Default)]
pub struct Flattener<'a> {
    service_name: &'a str,
    instance: &'a str,
    resource: AttributeColumns<'a>,
    scope_name: &'a str,
    scope_version: &'a str,
    scope: AttributeColumns<'a>,
    attributes: AttributeColumns<'a>,
    events_time_ns: Vec<u64>,
    events_name: Vec<&'a str>,
    events_dropped: Vec<u32>,
    event_attr_index: Vec<u16>,
    event_attributes: AttributeColumns<'a>,
    links_trace_id: Vec<[u8; 16]>,
    links_span_id: Vec<[u8; 8]>,
    links_trace_state: Vec<&'a str>,
    links_flags: Vec<u32>,
    links_dropped: Vec<u32>,
    link_attr_index: Vec<u16>,
    link_attributes: AttributeColumns<'a>,
}

fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|pair| pair.key == key)
        .and_then(
            |pair| match pair.value.as_ref().and_then(|value| value.value.as_ref()) {
                Some(Value::StringValue(text)) if !text.is_empty() => Some(text.as_str()),
                _ => None,
            },
        )
}

/// The database, queue or peer a span calls, from its attributes.
pub fn remote_target(span: &Span) -> Option<(ChildType, &str)> {
    if let Some(peer) = string_attribute(&span.attributes, "peer.service") {
        return Some((ChildType::Peer, peer));
    }
    if let Some(system) = string_attribute(&span.attributes, "db.system") {
        return Some((ChildType::Database, system));
    }
    string_attribute(&span.attributes, "messaging.system")
        .map(|system| (ChildType::Messaging, system))
}

/// Span ids are validated before flattening; this only reads them.
fn fixed<const N: usize>(bytes: &[u8]) -> [u8; N] {
    bytes.try_into().unwrap_or([0; N])
}

impl<'a> Flattener<'a> {
    /// Starts a resource: its service name and attributes apply to the spans that follow.
    pub fn set_resource(&mut self, resource_spans: &'a ResourceSpans) {
        self.resource.clear();
        let attributes: &'a [KeyValue] = resource_spans
            .resource
            .as_ref()
            .map_or(&[], |resource| resource.attributes.as_slice());
        self.service_name = string_attribute(attributes, "service.name").unwrap_or(UNKNOWN_SERVICE);
        self.instance = string_attribute(attributes, "service.instance.id")
            .or_else(|| string_attribute(attributes, "host.name"))
            .unwrap_or("");
        self.resource.extend_from_otlp(attributes);
    }

    /// Starts an instrumentation scope.
    pub fn set_scope(&mut self, scope: Option<&'a InstrumentationScope>) {
        self.scope.clear();
        self.scope_name = scope.map_or("", |scope| scope.name.as_str());
        self.scope_version = scope.map_or("", |scope| scope.version.as_str());
        if let Some(scope) = scope {
            self.scope.extend_from_otlp(&scope.attributes);
        }
    }

    /// The service of the current resource.
    pub fn service_name(&self) -> &'a str {
        self.service_name
    }

    /// The instance of the current resource: `service.instance.id`, else `host.name`,
    /// else empty.
    pub fn instance(&self) -> &'a str {
        self.instance
    }

    /// Fills the span's own columns and returns its row.
    pub fn row<'s>(&'s mut self, tenant: &'s str, span: &'a Span) -> SpanRow<'s> {
        self.attributes.clear();
        self.attributes.extend_from_otlp(&span.attributes);

        self.events_time_ns.clear();
        self.events_name.clear();
        self.events_dropped.clear();
        self.event_attr_index.clear();
        self.event_attributes.clear();
        for (index, event) in span.events.iter().enumerate() {
            self.events_time_ns.push(event.time_unix_nano);
            self.events_name.push(&event.name);
            self.events_dropped.push(event.dropped_attributes_count);
            self.event_attributes.extend_from_otlp(&event.attributes);
            let index = u16::try_from(index).unwrap_or(u16::MAX);
            self.event_attr_index
                .extend(std::iter::repeat_n(index, event.attributes.len()));
        }

        self.links_trace_id.clear();
        self.links_span_id.clear();
        self.links_trace_state.clear();
        self.links_flags.clear();
        self.links_dropped.clear();
        self.link_attr_index.clear();
        self.link_attributes.clear();
        for (index, link) in span.links.iter().enumerate() {
            self.links_trace_id.push(fixed(&link.trace_id));
            self.links_span_id.push(fixed(&link.span_id));
            self.links_trace_state.push(&link.trace_state);
            self.links_flags.push(link.flags);
            self.links_dropped.push(link.dropped_attributes_count);
            self.link_attributes.extend_from_otlp(&link.attributes);
            let index = u16::try_from(index).unwrap_or(u16::MAX);
            self.link_attr_index
                .extend(std::iter::repeat_n(index, link.attributes.len()));
        }

        let status = span.status.as_ref();
        let parent = parent_span_id(&span.parent_span_id)
            .ok()
            .flatten()
            .map_or([0; 8], |id| id.0);
        SpanRow {
            tenant,
            trace_id: fixed(&span.trace_id),
            span_id: fixed(&span.span_id),
            parent_span_id: parent,
            trace_state: &span.trace_state,
            flags: span.flags,
            service_name: self.service_name,
            name: &span.name,
            kind: SpanKind::from_otlp(span.kind) as u8,
            status_code: StatusCode::from_otlp(status.map_or(0, |status| status.code)) as u8,
            status_message: status.map_or("", |status| status.message.as_str()),
            start: unix_seconds(span.start_time_unix_nano),
            start_ns: span.start_time_unix_nano,
            duration_ns: span
                .end_time_unix_nano
                .saturating_sub(span.start_time_unix_nano),
            attr_keys: &self.attributes.keys,
            attr_values: &self.attributes.values,
            attr_types: &self.attributes.types,
            dropped_attributes_count: span.dropped_attributes_count,
            resource_keys: &self.resource.keys,
            resource_values: &self.resource.values,
            resource_types: &self.resource.types,
            scope_name: self.scope_name,
            scope_version: self.scope_version,
            scope_keys: &self.scope.keys,
            scope_values: &self.scope.values,
            scope_types: &self.scope.types,
            events_time_ns: &self.events_time_ns,
            events_name: &self.events_name,
            events_dropped_attributes_count: &self.events_dropped,
            event_attr_index: &self.event_attr_index,
            event_attr_keys: &self.event_attributes.keys,
            event_attr_values: &self.event_attributes.values,
            event_attr_types: &self.event_attributes.types,
            dropped_events_count: span.dropped_events_count,
            links_trace_id: &self.links_trace_id,
            links_span_id: &self.links_span_id,
            links_trace_state: &self.links_trace_state,
            links_flags: &self.links_flags,
            links_dropped_attributes_count: &self.links_dropped,
            link_attr_index: &self.link_attr_index,
            link_attr_keys: &self.link_attributes.keys,
            link_attr_values: &self.link_attributes.values,
            link_attr_types: &self.link_attributes.types,
            dropped_links_count: span.dropped_links_count,
        }
    }
}
