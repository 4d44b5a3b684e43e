//! Trace search and trace by id, in Jaeger's JSON shape.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::{
    extract::{rejection::QueryRejection, Path, Query, State},
    Json,
};
use caracal_model::{
    attributes::{typed_json, value_text, ValueType},
    blob::decode_span_blob,
    ids::{parent_span_id, TraceId},
    otlp::{
        common::v1::{any_value::Value as OtlpValue, InstrumentationScope, KeyValue},
        resource::v1::Resource,
        trace::v1::{ResourceSpans, Span},
    },
    span::{SpanKind, StatusCode},
};
use caracal_store::{reader::TraceQuery, rows::StoredTraceSpan};

/// Service name of a resource without one, as the OpenTelemetry SDKs name it.
const UNKNOWN_SERVICE: &str = "unknown_service";
use serde::Serialize;
use serde_json::{json, Value};

use super::{error::ApiError, Envelope, Tenant};
use crate::{duration::parse_go_duration, AppState};

/// One trace in Jaeger's shape.
#[derive(Debug, Serialize)]
pub struct TraceView {
    #[serde(rename = "traceID")]
    trace_id: String,
    spans: Vec<Value>,
    processes: serde_json::Map<String, Value>,
    warnings: Option<Vec<String>>,
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, value)| key == name && !value.is_empty())
        .map(|(_, value)| value.as_str())
}

fn number_param(params: &[(String, String)], name: &str) -> Result<Option<u64>, ApiError> {
    param(params, name)
        .map(|text| {
            text.parse::<u64>().map_err(|_| {
                ApiError::BadRequest(format!("parameter '{name}' must be a non-negative integer"))
            })
        })
        .transpose()
}

fn duration_param(params: &[(String, String)], name: &str) -> Result<Option<u64>, ApiError> {
    param(params, name)
        .map(|text| {
            parse_go_duration(text).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "parameter '{name}' is not a duration like 4.5us, 120ms or 1.2s"
                ))
            })
        })
        .transpose()
}

/// Tags from `tags={"k":"v"}` (JSON) and repeated `tag=k:v`.
fn tag_params(params: &[(String, String)]) -> Result<Vec<(String, String)>, ApiError> {
    let mut tags = Vec::new();
    for (key, value) in params {
        match key.as_str() {
            "tags" if !value.is_empty() => {
                let map: serde_json::Map<String, Value> =
                    serde_json::from_str(value).map_err(|error| {
                        ApiError::BadRequest(format!(
                            "parameter 'tags' is not a JSON object: {error}"
                        ))
                    })?;
                for (tag_key, tag_value) in map {
                    let text = match tag_value {
                        Value::String(text) => text,
                        other => other.to_string(),
                    };
                    tags.push((tag_key, text));
                }
            }
            "tag" => {
                let (tag_key, tag_value) = value.split_once(':').ok_or_else(|| {
                    ApiError::BadRequest("parameter 'tag' must be key:value".into())
                })?;
                tags.push((tag_key.to_owned(), tag_value.to_owned()));
            }
            _ => {}
        }
    }
    Ok(tags)
}

/// `GET /api/traces`: search, or fetch the traces named by `traceID` parameters.
pub async fn search(
    State(state): State<AppState>,
    tenant: Tenant,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Envelope<Vec<TraceView>>>, ApiError> {
    let Query(params) = params?;
    let requested_ids = params
        .iter()
        .filter(|(key, _)| key == "traceID")
        .map(|(_, value)| parse_trace_id(value))
        .collect::<Result<Vec<_>, _>>()?;
    let trace_ids = if requested_ids.is_empty() {
        let query = build_query(&state, &tenant, &params)?;
        state.store.find_trace_ids(&query).await?
    } else {
        requested_ids
    };
    let spans = state.store.get_traces(&tenant, &trace_ids).await?;
    let traces = assemble_traces(&trace_ids, spans);
    let total = traces.len();
    Ok(Json(Envelope::ok(traces, total)))
}

fn build_query(
    state: &AppState,
    tenant: &str,
    params: &[(String, String)],
) -> Result<TraceQuery, ApiError> {
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as u64);
    let end_us = number_param(params, "end")?.unwrap_or(now_us);
    let lookback_ns = duration_param(params, "lookback")?;
    let start_us = match number_param(params, "start")? {
        Some(start) => start,
        None => end_us.saturating_sub(
            lookback_ns.map_or(state.config.default_lookback_secs * 1_000_000, |nanos| {
                nanos / 1_000
            }),
        ),
    };
    if start_us > end_us {
        return Err(ApiError::BadRequest("'start' is after 'end'".into()));
    }
    let limit = match number_param(params, "limit")? {
        Some(0) | None => state.config.default_limit,
        Some(limit) => u32::try_from(limit)
            .unwrap_or(u32::MAX)
            .min(state.config.max_limit),
    };
    let min_duration_ns = duration_param(params, "minDuration")?;
    let max_duration_ns = duration_param(params, "maxDuration")?;
    if let (Some(min), Some(max)) = (min_duration_ns, max_duration_ns) {
        if min > max {
            return Err(ApiError::BadRequest(
                "'minDuration' is larger than 'maxDuration'".into(),
            ));
        }
    }
    let span_kind = param(params, "spanKind")
        .map(|name| {
            SpanKind::from_jaeger_name(name)
                .map(|kind| kind as u8)
                .ok_or_else(|| ApiError::BadRequest(format!("unknown spanKind {name:?}")))
        })
        .transpose()?;
    Ok(TraceQuery {
        tenant: tenant.to_owned(),
        service: param(params, "service").map(str::to_owned),
        operation: param(params, "operation").map(str::to_owned),
        span_kind,
        tags: tag_params(params)?,
        start_ns: start_us.saturating_mul(1_000),
        end_ns: end_us.saturating_mul(1_000).saturating_add(999),
        min_duration_ns,
        max_duration_ns,
        limit,
    })
}

fn parse_trace_id(text: &str) -> Result<[u8; 16], ApiError> {
    TraceId::from_hex(text)
        .map(|id| id.0)
        .map_err(|error| ApiError::BadRequest(format!("invalid trace id {text:?}: {error}")))
}

/// `GET /api/traces/{traceID}`: one trace, 404 when unknown.
pub async fn get_trace(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(trace_id): Path<String>,
) -> Result<Json<Envelope<Vec<TraceView>>>, ApiError> {
    let trace_id = parse_trace_id(&trace_id)?;
    let spans = state.store.get_traces(&tenant, &[trace_id]).await?;
    if spans.is_empty() {
        return Err(ApiError::NotFound("trace not found".into()));
    }
    let traces = assemble_traces(&[trace_id], spans);
    Ok(Json(Envelope::ok(traces, 1)))
}

/// Groups spans by trace, keeping the order of `trace_ids`.
pub fn assemble_traces(trace_ids: &[[u8; 16]], spans: Vec<StoredTraceSpan>) -> Vec<TraceView> {
    let mut by_trace: HashMap<[u8; 16], Vec<ResourceSpans>> = HashMap::new();
    for stored in spans {
        match decode_span_blob(&stored.span) {
            Ok(blob) => by_trace.entry(stored.trace_id).or_default().push(blob),
            Err(error) => tracing::warn!(%error, "undecodable span blob skipped"),
        }
    }
    trace_ids
        .iter()
        .filter_map(|trace_id| {
            by_trace
                .remove(trace_id)
                .map(|spans| trace_view(*trace_id, spans))
        })
        .collect()
}

fn tag(key: &str, value_type: ValueType, text: &str) -> Value {
    json!({"key": key, "type": value_type.jaeger_name(), "value": typed_json(value_type, text)})
}

fn attribute_tag(attribute: &KeyValue) -> Value {
    let (value_type, text) = value_text(attribute.value.as_ref());
    tag(&attribute.key, value_type, &text)
}

fn service_name(resource: Option<&Resource>) -> &str {
    resource
        .and_then(|resource| {
            resource
                .attributes
                .iter()
                .find(|attribute| attribute.key == "service.name")
        })
        .and_then(|attribute| {
            match attribute
                .value
                .as_ref()
                .and_then(|value| value.value.as_ref())
            {
                Some(OtlpValue::StringValue(name)) => Some(name.as_str()),
                _ => None,
            }
        })
        .unwrap_or(UNKNOWN_SERVICE)
}

fn trace_view(trace_id: [u8; 16], blobs: Vec<ResourceSpans>) -> TraceView {
    let trace_hex = TraceId(trace_id).to_hex();
    let mut processes = serde_json::Map::new();
    // One process per distinct resource; a trace has a handful, so a linear search
    // by equality is cheaper than hashing every span's resource.
    let mut known: Vec<(Option<&Resource>, String)> = Vec::new();
    let mut views = Vec::with_capacity(blobs.len());
    for blob in &blobs {
        let resource = blob.resource.as_ref();
        let process_id = match known.iter().find(|(seen, _)| *seen == resource) {
            Some((_, id)) => id.clone(),
            None => {
                let id = format!("p{}", known.len() + 1);
                let process_tags: Vec<Value> = resource
                    .map(|resource| resource.attributes.as_slice())
                    .unwrap_or_default()
                    .iter()
                    .filter(|attribute| attribute.key != "service.name")
                    .map(attribute_tag)
                    .collect();
                processes.insert(
                    id.clone(),
                    json!({"serviceName": service_name(resource), "tags": process_tags}),
                );
                known.push((resource, id.clone()));
                id
            }
        };
        for scope_spans in &blob.scope_spans {
            for span in &scope_spans.spans {
                views.push(span_view(
                    &trace_hex,
                    scope_spans.scope.as_ref(),
                    span,
                    &process_id,
                ));
            }
        }
    }
    views.sort_by_key(|view| view["startTime"].as_u64().unwrap_or(0));
    TraceView {
        trace_id: trace_hex,
        spans: views,
        processes,
        warnings: None,
    }
}

fn span_view(
    trace_hex: &str,
    scope: Option<&InstrumentationScope>,
    span: &Span,
    process_id: &str,
) -> Value {
    let mut references = Vec::new();
    if let Ok(Some(parent)) = parent_span_id(&span.parent_span_id) {
        references
            .push(json!({"refType": "CHILD_OF", "traceID": trace_hex, "spanID": parent.to_hex()}));
    }
    for link in &span.links {
        let is_child_of = link.attributes.iter().any(|attribute| {
            attribute.key == "opentracing.ref_type"
                && matches!(attribute.value.as_ref().and_then(|value| value.value.as_ref()),
                    Some(OtlpValue::StringValue(kind)) if kind == "child_of")
        });
        references.push(json!({
            "refType": if is_child_of { "CHILD_OF" } else { "FOLLOWS_FROM" },
            "traceID": const_hex::encode(&link.trace_id),
            "spanID": const_hex::encode(&link.span_id),
        }));
    }

    let mut tags: Vec<Value> = span.attributes.iter().map(attribute_tag).collect();
    let kind = SpanKind::from_otlp(span.kind);
    if kind != SpanKind::Unspecified {
        tags.push(tag("span.kind", ValueType::String, kind.jaeger_name()));
    }
    let status = span.status.as_ref();
    let code = StatusCode::from_otlp(status.map_or(0, |status| status.code));
    if let Some(name) = code.otel_name() {
        tags.push(tag("otel.status_code", ValueType::String, name));
    }
    if code == StatusCode::Error {
        tags.push(tag("error", ValueType::Bool, "true"));
    }
    if let Some(message) = status
        .map(|status| status.message.as_str())
        .filter(|message| !message.is_empty())
    {
        tags.push(tag("otel.status_description", ValueType::String, message));
    }
    if let Some(scope) = scope {
        if !scope.name.is_empty() {
            tags.push(tag("otel.scope.name", ValueType::String, &scope.name));
        }
        if !scope.version.is_empty() {
            tags.push(tag("otel.scope.version", ValueType::String, &scope.version));
        }
        tags.extend(scope.attributes.iter().map(attribute_tag));
    }
    if !span.trace_state.is_empty() {
        tags.push(tag("w3c.tracestate", ValueType::String, &span.trace_state));
    }

    let logs: Vec<Value> = span
        .events
        .iter()
        .map(|event| {
            let mut fields = Vec::with_capacity(event.attributes.len() + 1);
            if !event.name.is_empty() {
                fields.push(tag("event", ValueType::String, &event.name));
            }
            fields.extend(event.attributes.iter().map(attribute_tag));
            json!({"timestamp": event.time_unix_nano / 1_000, "fields": fields})
        })
        .collect();

    let duration_ns = span
        .end_time_unix_nano
        .saturating_sub(span.start_time_unix_nano);
    json!({
        "traceID": trace_hex,
        "spanID": const_hex::encode(&span.span_id),
        "operationName": span.name,
        "references": references,
        "flags": span.flags,
        "startTime": span.start_time_unix_nano / 1_000,
        "duration": duration_ns / 1_000,
        "tags": tags,
        "logs": logs,
        "processID": process_id,
        "warnings": Value::Null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn tags_from_json_and_pairs() {
        let tags = tag_params(&params(&[
            ("tags", r#"{"error":"true","http.status_code":200}"#),
            ("tag", "a:b:c"),
        ]))
        .unwrap();
        assert_eq!(
            tags,
            vec![
                ("error".into(), "true".into()),
                ("http.status_code".into(), "200".into()),
                ("a".into(), "b:c".into())
            ]
        );
        assert!(tag_params(&params(&[("tags", "not json")])).is_err());
        assert!(tag_params(&params(&[("tag", "nocolon")])).is_err());
    }
}
