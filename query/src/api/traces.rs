//! Trace search and trace by id, in Jaeger's JSON shape.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::{
    extract::{rejection::QueryRejection, Path, Query, State},
    Json,
};
use caracal_model::{
    attributes::{typed_json, ValueType},
    ids::{SpanId, TraceId},
    span::{SpanKind, StatusCode},
};
use caracal_store::{reader::TraceQuery, rows::StoredSpan};
use serde::Serialize;
use serde_json::{json, Value};

use super::{error::ApiError, Envelope, DEFAULT_TENANT};
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
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Envelope<Vec<TraceView>>>, ApiError> {
    let Query(params) = params?;
    let requested_ids = params
        .iter()
        .filter(|(key, _)| key == "traceID")
        .map(|(_, value)| parse_trace_id(value))
        .collect::<Result<Vec<_>, _>>()?;
    let trace_ids = if requested_ids.is_empty() {
        let query = build_query(&state, &params)?;
        state.store.find_trace_ids(&query).await?
    } else {
        requested_ids
    };
    let spans = state.store.get_traces(DEFAULT_TENANT, &trace_ids).await?;
    let traces = assemble_traces(&trace_ids, spans);
    let total = traces.len();
    Ok(Json(Envelope::ok(traces, total)))
}

fn build_query(state: &AppState, params: &[(String, String)]) -> Result<TraceQuery, ApiError> {
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
        tenant: DEFAULT_TENANT.to_owned(),
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
    Path(trace_id): Path<String>,
) -> Result<Json<Envelope<Vec<TraceView>>>, ApiError> {
    let trace_id = parse_trace_id(&trace_id)?;
    let spans = state.store.get_traces(DEFAULT_TENANT, &[trace_id]).await?;
    if spans.is_empty() {
        return Err(ApiError::NotFound("trace not found".into()));
    }
    let traces = assemble_traces(&[trace_id], spans);
    Ok(Json(Envelope::ok(traces, 1)))
}

/// Groups spans by trace, keeping the order of `trace_ids`.
pub fn assemble_traces(trace_ids: &[[u8; 16]], spans: Vec<StoredSpan>) -> Vec<TraceView> {
    let mut by_trace: HashMap<[u8; 16], Vec<StoredSpan>> = HashMap::new();
    for span in spans {
        by_trace.entry(span.trace_id).or_default().push(span);
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

fn tags_of(keys: &[String], values: &[String], types: &[u8]) -> Vec<Value> {
    keys.iter()
        .zip(values)
        .zip(types)
        .map(|((key, text), value_type)| tag(key, ValueType::from_u8(*value_type), text))
        .collect()
}

fn trace_view(trace_id: [u8; 16], spans: Vec<StoredSpan>) -> TraceView {
    let trace_hex = TraceId(trace_id).to_hex();
    let mut processes = serde_json::Map::new();
    let mut process_ids: HashMap<(String, Vec<String>, Vec<String>), String> = HashMap::new();
    let mut views = Vec::with_capacity(spans.len());
    for span in &spans {
        let process_key = (
            span.service_name.clone(),
            span.resource_keys.clone(),
            span.resource_values.clone(),
        );
        let next_id = format!("p{}", process_ids.len() + 1);
        let process_id = process_ids
            .entry(process_key)
            .or_insert_with(|| {
                let process_tags: Vec<Value> = span
                    .resource_keys
                    .iter()
                    .zip(&span.resource_values)
                    .zip(&span.resource_types)
                    .filter(|((key, _), _)| key.as_str() != "service.name")
                    .map(|((key, text), value_type)| {
                        tag(key, ValueType::from_u8(*value_type), text)
                    })
                    .collect();
                processes.insert(
                    next_id.clone(),
                    json!({"serviceName": span.service_name, "tags": process_tags}),
                );
                next_id
            })
            .clone();
        views.push(span_view(&trace_hex, span, &process_id));
    }
    TraceView {
        trace_id: trace_hex,
        spans: views,
        processes,
        warnings: None,
    }
}

fn span_view(trace_hex: &str, span: &StoredSpan, process_id: &str) -> Value {
    let mut references = Vec::new();
    if span.parent_span_id != [0; 8] {
        references.push(json!({
            "refType": "CHILD_OF",
            "traceID": trace_hex,
            "spanID": SpanId(span.parent_span_id).to_hex(),
        }));
    }
    for (index, (link_trace, link_span)) in span
        .links_trace_id
        .iter()
        .zip(&span.links_span_id)
        .enumerate()
    {
        let is_child_of = span
            .link_attr_index
            .iter()
            .zip(&span.link_attr_keys)
            .zip(&span.link_attr_values)
            .any(|((attr_index, key), value)| {
                usize::from(*attr_index) == index
                    && key == "opentracing.ref_type"
                    && value == "child_of"
            });
        references.push(json!({
            "refType": if is_child_of { "CHILD_OF" } else { "FOLLOWS_FROM" },
            "traceID": TraceId(*link_trace).to_hex(),
            "spanID": SpanId(*link_span).to_hex(),
        }));
    }

    let mut tags = tags_of(&span.attr_keys, &span.attr_values, &span.attr_types);
    let kind = SpanKind::from_otlp(i32::from(span.kind));
    if kind != SpanKind::Unspecified {
        tags.push(tag("span.kind", ValueType::String, kind.jaeger_name()));
    }
    let status = StatusCode::from_otlp(i32::from(span.status_code));
    if let Some(name) = status.otel_name() {
        tags.push(tag("otel.status_code", ValueType::String, name));
    }
    if status == StatusCode::Error {
        tags.push(tag("error", ValueType::Bool, "true"));
    }
    if !span.status_message.is_empty() {
        tags.push(tag(
            "otel.status_description",
            ValueType::String,
            &span.status_message,
        ));
    }
    if !span.scope_name.is_empty() {
        tags.push(tag("otel.scope.name", ValueType::String, &span.scope_name));
    }
    if !span.scope_version.is_empty() {
        tags.push(tag(
            "otel.scope.version",
            ValueType::String,
            &span.scope_version,
        ));
    }
    tags.extend(tags_of(
        &span.scope_keys,
        &span.scope_values,
        &span.scope_types,
    ));
    if !span.trace_state.is_empty() {
        tags.push(tag("w3c.tracestate", ValueType::String, &span.trace_state));
    }

    let logs: Vec<Value> = span
        .events_time_ns
        .iter()
        .zip(&span.events_name)
        .enumerate()
        .map(|(index, (time_ns, name))| {
            let mut fields = Vec::new();
            if !name.is_empty() {
                fields.push(tag("event", ValueType::String, name));
            }
            for (((attr_index, key), text), value_type) in span
                .event_attr_index
                .iter()
                .zip(&span.event_attr_keys)
                .zip(&span.event_attr_values)
                .zip(&span.event_attr_types)
            {
                if usize::from(*attr_index) == index {
                    fields.push(tag(key, ValueType::from_u8(*value_type), text));
                }
            }
            json!({"timestamp": time_ns / 1_000, "fields": fields})
        })
        .collect();

    json!({
        "traceID": trace_hex,
        "spanID": SpanId(span.span_id).to_hex(),
        "operationName": span.name,
        "references": references,
        "flags": span.flags,
        "startTime": span.start_ns / 1_000,
        "duration": span.duration_ns / 1_000,
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
