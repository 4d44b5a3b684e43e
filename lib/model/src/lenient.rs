//! A forgiving protobuf decoder for OTLP trace exports.
//!
//! Generated OTLP types reject a whole request when one string holds invalid UTF-8.
//! These mirror messages read every string field as bytes, so one bad attribute costs
//! only its own text (invalid sequences become U+FFFD, and are counted), never the spans
//! around it. Field numbers follow `opentelemetry/proto/trace/v1/trace.proto`.

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1 as otlp_common,
    resource::v1::Resource as OtlpResource, trace::v1 as otlp_trace,
};
use prost::Message;

/// What lenient decoding produced.
#[derive(Debug, Default)]
pub struct Decoded {
    /// The request with every string made valid UTF-8.
    pub request: ExportTraceServiceRequest,
    /// How many strings held invalid UTF-8 and were repaired.
    pub num_invalid_utf8: u64,
}

/// Decodes an `ExportTraceServiceRequest`, repairing invalid UTF-8 instead of failing.
pub fn decode_export_request(bytes: &[u8]) -> Result<Decoded, prost::DecodeError> {
    let raw = RawExportRequest::decode(bytes)?;
    let mut repair = Repair::default();
    let request = ExportTraceServiceRequest {
        resource_spans: raw
            .resource_spans
            .into_iter()
            .map(|resource_spans| repair.resource_spans(resource_spans))
            .collect(),
    };
    Ok(Decoded {
        request,
        num_invalid_utf8: repair.num_invalid,
    })
}

/// Mirror of `ExportTraceServiceRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct RawExportRequest {
    /// Resource spans.
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<RawResourceSpans>,
}

/// Mirror of `ResourceSpans`.
#[derive(Clone, PartialEq, Message)]
pub struct RawResourceSpans {
    /// The resource.
    #[prost(message, optional, tag = "1")]
    pub resource: Option<RawResource>,
    /// Spans grouped by scope.
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<RawScopeSpans>,
    /// Schema URL.
    #[prost(bytes = "vec", tag = "3")]
    pub schema_url: Vec<u8>,
}

/// Mirror of `Resource`.
#[derive(Clone, PartialEq, Message)]
pub struct RawResource {
    /// Attributes.
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<RawKeyValue>,
    /// Dropped attributes.
    #[prost(uint32, tag = "2")]
    pub dropped_attributes_count: u32,
}

/// Mirror of `ScopeSpans`.
#[derive(Clone, PartialEq, Message)]
pub struct RawScopeSpans {
    /// The instrumentation scope.
    #[prost(message, optional, tag = "1")]
    pub scope: Option<RawScope>,
    /// Spans.
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<RawSpan>,
    /// Schema URL.
    #[prost(bytes = "vec", tag = "3")]
    pub schema_url: Vec<u8>,
}

/// Mirror of `InstrumentationScope`.
#[derive(Clone, PartialEq, Message)]
pub struct RawScope {
    /// Name.
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
    /// Version.
    #[prost(bytes = "vec", tag = "2")]
    pub version: Vec<u8>,
    /// Attributes.
    #[prost(message, repeated, tag = "3")]
    pub attributes: Vec<RawKeyValue>,
    /// Dropped attributes.
    #[prost(uint32, tag = "4")]
    pub dropped_attributes_count: u32,
}

/// Mirror of `Span`.
#[derive(Clone, PartialEq, Message)]
pub struct RawSpan {
    /// Trace id.
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    /// Span id.
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    /// W3C trace state.
    #[prost(bytes = "vec", tag = "3")]
    pub trace_state: Vec<u8>,
    /// Parent span id.
    #[prost(bytes = "vec", tag = "4")]
    pub parent_span_id: Vec<u8>,
    /// Name.
    #[prost(bytes = "vec", tag = "5")]
    pub name: Vec<u8>,
    /// Kind.
    #[prost(int32, tag = "6")]
    pub kind: i32,
    /// Start.
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    /// End.
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    /// Attributes.
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<RawKeyValue>,
    /// Dropped attributes.
    #[prost(uint32, tag = "10")]
    pub dropped_attributes_count: u32,
    /// Events.
    #[prost(message, repeated, tag = "11")]
    pub events: Vec<RawEvent>,
    /// Dropped events.
    #[prost(uint32, tag = "12")]
    pub dropped_events_count: u32,
    /// Links.
    #[prost(message, repeated, tag = "13")]
    pub links: Vec<RawLink>,
    /// Dropped links.
    #[prost(uint32, tag = "14")]
    pub dropped_links_count: u32,
    /// Status.
    #[prost(message, optional, tag = "15")]
    pub status: Option<RawStatus>,
    /// Flags.
    #[prost(fixed32, tag = "16")]
    pub flags: u32,
}

/// Mirror of `Span.Event`.
#[derive(Clone, PartialEq, Message)]
pub struct RawEvent {
    /// Time.
    #[prost(fixed64, tag = "1")]
    pub time_unix_nano: u64,
    /// Name.
    #[prost(bytes = "vec", tag = "2")]
    pub name: Vec<u8>,
    /// Attributes.
    #[prost(message, repeated, tag = "3")]
    pub attributes: Vec<RawKeyValue>,
    /// Dropped attributes.
    #[prost(uint32, tag = "4")]
    pub dropped_attributes_count: u32,
}

/// Mirror of `Span.Link`.
#[derive(Clone, PartialEq, Message)]
pub struct RawLink {
    /// Trace id.
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    /// Span id.
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    /// Trace state.
    #[prost(bytes = "vec", tag = "3")]
    pub trace_state: Vec<u8>,
    /// Attributes.
    #[prost(message, repeated, tag = "4")]
    pub attributes: Vec<RawKeyValue>,
    /// Dropped attributes.
    #[prost(uint32, tag = "5")]
    pub dropped_attributes_count: u32,
    /// Flags.
    #[prost(fixed32, tag = "6")]
    pub flags: u32,
}

/// Mirror of `Status`.
#[derive(Clone, PartialEq, Message)]
pub struct RawStatus {
    /// Message.
    #[prost(bytes = "vec", tag = "2")]
    pub message: Vec<u8>,
    /// Code.
    #[prost(int32, tag = "3")]
    pub code: i32,
}

/// Mirror of `KeyValue`.
#[derive(Clone, PartialEq, Message)]
pub struct RawKeyValue {
    /// Key.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// Value.
    #[prost(message, optional, tag = "2")]
    pub value: Option<RawAnyValue>,
}

/// Mirror of `AnyValue`.
#[derive(Clone, PartialEq, Message)]
pub struct RawAnyValue {
    /// The value.
    #[prost(oneof = "RawValue", tags = "1, 2, 3, 4, 5, 6, 7")]
    pub value: Option<RawValue>,
}

/// Mirror of `AnyValue.value`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum RawValue {
    /// Text.
    #[prost(bytes, tag = "1")]
    String(Vec<u8>),
    /// Bool.
    #[prost(bool, tag = "2")]
    Bool(bool),
    /// Integer.
    #[prost(int64, tag = "3")]
    Int(i64),
    /// Float.
    #[prost(double, tag = "4")]
    Double(f64),
    /// Array.
    #[prost(message, tag = "5")]
    Array(RawArrayValue),
    /// Key-value list.
    #[prost(message, tag = "6")]
    KvList(RawKeyValueList),
    /// Bytes.
    #[prost(bytes, tag = "7")]
    Bytes(Vec<u8>),
}

/// Mirror of `ArrayValue`.
#[derive(Clone, PartialEq, Message)]
pub struct RawArrayValue {
    /// Items.
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<RawAnyValue>,
}

/// Mirror of `KeyValueList`.
#[derive(Clone, PartialEq, Message)]
pub struct RawKeyValueList {
    /// Pairs.
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<RawKeyValue>,
}

#[derive(Default)]
struct Repair {
    num_invalid: u64,
}

impl Repair {
    fn text(&mut self, bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap_or_else(|error| {
            self.num_invalid += 1;
            String::from_utf8_lossy(error.as_bytes()).into_owned()
        })
    }

    fn resource_spans(&mut self, raw: RawResourceSpans) -> otlp_trace::ResourceSpans {
        otlp_trace::ResourceSpans {
            resource: raw.resource.map(|resource| OtlpResource {
                attributes: self.key_values(resource.attributes),
                dropped_attributes_count: resource.dropped_attributes_count,
                ..Default::default()
            }),
            scope_spans: raw
                .scope_spans
                .into_iter()
                .map(|scope_spans| otlp_trace::ScopeSpans {
                    scope: scope_spans
                        .scope
                        .map(|scope| otlp_common::InstrumentationScope {
                            name: self.text(scope.name),
                            version: self.text(scope.version),
                            attributes: self.key_values(scope.attributes),
                            dropped_attributes_count: scope.dropped_attributes_count,
                        }),
                    spans: scope_spans
                        .spans
                        .into_iter()
                        .map(|span| self.span(span))
                        .collect(),
                    schema_url: self.text(scope_spans.schema_url),
                })
                .collect(),
            schema_url: self.text(raw.schema_url),
        }
    }

    fn span(&mut self, raw: RawSpan) -> otlp_trace::Span {
        otlp_trace::Span {
            trace_id: raw.trace_id,
            span_id: raw.span_id,
            trace_state: self.text(raw.trace_state),
            parent_span_id: raw.parent_span_id,
            flags: raw.flags,
            name: self.text(raw.name),
            kind: raw.kind,
            start_time_unix_nano: raw.start_time_unix_nano,
            end_time_unix_nano: raw.end_time_unix_nano,
            attributes: self.key_values(raw.attributes),
            dropped_attributes_count: raw.dropped_attributes_count,
            events: raw
                .events
                .into_iter()
                .map(|event| otlp_trace::span::Event {
                    time_unix_nano: event.time_unix_nano,
                    name: self.text(event.name),
                    attributes: self.key_values(event.attributes),
                    dropped_attributes_count: event.dropped_attributes_count,
                })
                .collect(),
            dropped_events_count: raw.dropped_events_count,
            links: raw
                .links
                .into_iter()
                .map(|link| otlp_trace::span::Link {
                    trace_id: link.trace_id,
                    span_id: link.span_id,
                    trace_state: self.text(link.trace_state),
                    attributes: self.key_values(link.attributes),
                    dropped_attributes_count: link.dropped_attributes_count,
                    flags: link.flags,
                })
                .collect(),
            dropped_links_count: raw.dropped_links_count,
            status: raw.status.map(|status| otlp_trace::Status {
                message: self.text(status.message),
                code: status.code,
            }),
        }
    }

    fn key_values(&mut self, raw: Vec<RawKeyValue>) -> Vec<otlp_common::KeyValue> {
        raw.into_iter()
            .map(|pair| otlp_common::KeyValue {
                key: self.text(pair.key),
                key_strindex: 0,
                value: pair.value.map(|value| self.any_value(value)),
            })
            .collect()
    }

    fn any_value(&mut self, raw: RawAnyValue) -> otlp_common::AnyValue {
        use otlp_common::any_value::Value;
        let value = raw.value.map(|inner| match inner {
            RawValue::String(bytes) => Value::StringValue(self.text(bytes)),
            RawValue::Bool(flag) => Value::BoolValue(flag),
            RawValue::Int(number) => Value::IntValue(number),
            RawValue::Double(number) => Value::DoubleValue(number),
            RawValue::Bytes(bytes) => Value::BytesValue(bytes),
            RawValue::Array(array) => Value::ArrayValue(otlp_common::ArrayValue {
                values: array
                    .values
                    .into_iter()
                    .map(|item| self.any_value(item))
                    .collect(),
            }),
            RawValue::KvList(list) => Value::KvlistValue(otlp_common::KeyValueList {
                values: self.key_values(list.values),
            }),
        });
        otlp_common::AnyValue { value }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otlp_common::{any_value::Value, AnyValue, KeyValue};

    fn request_with_attribute(value: &str) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![otlp_trace::ResourceSpans {
                scope_spans: vec![otlp_trace::ScopeSpans {
                    spans: vec![otlp_trace::Span {
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        name: "op".into(),
                        start_time_unix_nano: 5,
                        attributes: vec![KeyValue {
                            key: "k".into(),
                            key_strindex: 0,
                            value: Some(AnyValue {
                                value: Some(Value::StringValue(value.into())),
                            }),
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn valid_input_decodes_like_the_generated_types() {
        let request = request_with_attribute("héllo");
        let decoded = decode_export_request(&request.encode_to_vec()).unwrap();
        assert_eq!(decoded.request, request);
        assert_eq!(decoded.num_invalid_utf8, 0);
    }

    #[test]
    fn invalid_utf8_is_repaired_not_fatal() {
        let mut bytes = request_with_attribute("XYZW").encode_to_vec();
        let position = bytes
            .windows(4)
            .position(|window| window == b"XYZW")
            .unwrap();
        bytes[position + 1] = 0xff;
        assert!(ExportTraceServiceRequest::decode(bytes.as_slice()).is_err());
        let decoded = decode_export_request(&bytes).unwrap();
        assert_eq!(decoded.num_invalid_utf8, 1);
        let span = &decoded.request.resource_spans[0].scope_spans[0].spans[0];
        let Some(Value::StringValue(text)) = &span.attributes[0].value.as_ref().unwrap().value
        else {
            panic!("string expected")
        };
        assert_eq!(text, "X\u{fffd}ZW");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode_export_request(&[0xff, 0xff, 0xff, 0x01]).is_err());
    }
}
