//! The Zipkin v2 receiver with the shared fixtures (`zipkin-v2/*.json`): every span is
//! stored and read back through the query API with its parent, service, name and times;
//! clock skew is kept as sent; peer calls become dependency edges; bad spans are refused
//! one by one; bad bodies get clear errors.

use std::{collections::BTreeMap, io::Write as _, path::PathBuf};

use caracal_testkit::{fixtures_dir, test_store, TestStack};
use serde_json::{json, Value};

/// What the query API must show for a span: (span id, parent, service, name, start µs,
/// duration µs).
type SpanFacts = (String, Option<String>, String, String, u64, u64);

fn fixture_files() -> Vec<PathBuf> {
    let dir = fixtures_dir().join("zipkin-v2");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "fixtures missing in {}", dir.display());
    files
}

/// Zipkin's id normalization: lowercase, left-padded with zeros.
fn padded(id: &str, width: usize) -> String {
    format!("{:0>width$}", id.to_ascii_lowercase())
}

/// The facts of every span of a fixture, by trace id.
fn expected_facts(spans: &[Value]) -> BTreeMap<String, Vec<SpanFacts>> {
    let mut by_trace: BTreeMap<String, Vec<SpanFacts>> = BTreeMap::new();
    for span in spans {
        let id = padded(span["id"].as_str().unwrap(), 16);
        let parent = span["parentId"]
            .as_str()
            .map(|parent| padded(parent, 16))
            .filter(|parent| *parent != id);
        let service = span["localEndpoint"]["serviceName"]
            .as_str()
            .unwrap_or("unknown_service")
            .to_owned();
        let facts = (
            id,
            parent,
            service,
            span["name"].as_str().unwrap_or("").to_owned(),
            span["timestamp"].as_u64().unwrap(),
            span["duration"].as_u64().unwrap_or(0),
        );
        let trace_id = padded(span["traceId"].as_str().unwrap(), 32);
        by_trace.entry(trace_id).or_default().push(facts);
    }
    for facts in by_trace.values_mut() {
        facts.sort();
    }
    by_trace
}

/// The same facts as the query API shows them.
fn stored_facts(trace: &Value) -> Vec<SpanFacts> {
    let mut facts: Vec<SpanFacts> = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|span| {
            let parent = span["references"]
                .as_array()
                .unwrap()
                .iter()
                .find(|reference| reference["refType"] == "CHILD_OF")
                .map(|reference| reference["spanID"].as_str().unwrap().to_owned());
            let process = span["processID"].as_str().unwrap();
            (
                span["spanID"].as_str().unwrap().to_owned(),
                parent,
                trace["processes"][process]["serviceName"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                span["operationName"].as_str().unwrap().to_owned(),
                span["startTime"].as_u64().unwrap(),
                span["duration"].as_u64().unwrap(),
            )
        })
        .collect();
    facts.sort();
    facts
}

fn span_tags(span: &Value) -> BTreeMap<String, Value> {
    span["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tag| {
            (
                tag["key"].as_str().unwrap().to_owned(),
                tag["value"].clone(),
            )
        })
        .collect()
}

/// The stored span with `span_id`, and with `kind` when given (shared spans come in a
/// client and a server half with the same id).
fn find_span<'a>(trace: &'a Value, span_id: &str, kind: Option<&str>) -> &'a Value {
    trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|span| {
            span["spanID"] == span_id
                && kind.is_none_or(|kind| span_tags(span).get("span.kind") == Some(&json!(kind)))
        })
        .unwrap_or_else(|| panic!("no span {span_id} ({kind:?})"))
}

fn tags_of(trace: &Value, span_id: &str) -> BTreeMap<String, Value> {
    span_tags(find_span(trace, span_id, None))
}

async fn stored_trace(stack: &TestStack, trace_id: &str) -> Value {
    let (status, body) = stack
        .get_json(&format!("/api/traces/{trace_id}"), &[])
        .await;
    assert_eq!(status, 200, "{trace_id}: {body}");
    body["data"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_is_stored_with_its_tree() {
    let stack = TestStack::start(test_store("zipkin_fixtures").await).await;
    let mut traces = BTreeMap::new();
    for file in fixture_files() {
        let body = std::fs::read(&file).unwrap();
        let spans: Vec<Value> = serde_json::from_slice(&body).unwrap();
        let (status, response) = stack.post_zipkin(body, None).await;
        assert_eq!(status, 202, "{}: {response}", file.display());
        assert_eq!(
            response,
            json!({"accepted": spans.len(), "rejected": 0, "message": ""}),
            "{}",
            file.display()
        );
        for (trace_id, expected) in expected_facts(&spans) {
            let trace = stored_trace(&stack, &trace_id).await;
            assert_eq!(stored_facts(&trace), expected, "{}", file.display());
            traces.insert(trace_id, trace);
        }
    }

    // skew.json: a server half that starts before its parent is stored as sent.
    let skew = &traces["00000000000000001e223ff1f80f1c69"];
    let start_of = |span_id: &str| {
        find_span(skew, span_id, Some("server"))["startTime"]
            .as_u64()
            .unwrap()
    };
    let (server_half, parent) = (start_of("74280ae0c10d8062"), start_of("bf396325699c84bf"));
    assert_eq!(
        (server_half, parent),
        (1_470_150_004_008_761, 1_470_150_004_071_068)
    );

    // Endpoints, tags and flags as attributes.
    let db = &traces["000000000000000019f84f102048e047"];
    let insert = tags_of(db, "5d532ef6fed52445");
    assert_eq!(insert["peer.service"], "app_db");
    assert_eq!(insert["net.host.ip"], "172.23.250.16");
    assert_eq!(insert["span.kind"], "client");
    assert!(insert["sql.query"]
        .as_str()
        .unwrap()
        .starts_with("insert into revinfo"));
    let server = tags_of(db, "19f84f102048e047");
    assert_eq!(server["net.peer.ip"], "::1");
    assert_eq!(server["net.peer.port"], 53367);
    let envoy = tags_of(
        &traces["0000000000000000978883983d506fa5"],
        "978883983d506fa5",
    );
    assert_eq!(envoy["zipkin.shared"], true);
    assert_eq!(envoy["upstream_cluster"], "service_google");

    // The `error` tag is the status, its value the message.
    let kafka = &traces["00000000000000000562809467078eab"];
    let failed = tags_of(kafka, "2f77d5b0b8e0de35");
    assert_eq!(failed["error"], true);
    assert_eq!(failed["otel.status_description"], "some error");
    let empty_error = tags_of(kafka, "568b33e6af8a225a");
    assert_eq!(empty_error["error"], true);
    assert!(!empty_error.contains_key("otel.status_description"));

    // Annotations are logs.
    let yelp = &traces["0000000000000000a03ee8fff1dcd9b9"];
    let annotated = find_span(yelp, "668ed78ad94b35a1", Some("server"));
    assert_eq!(
        annotated["logs"],
        json!([{"timestamp": 1_571_896_375_355_436u64,
                "fields": [{"key": "event", "type": "string", "value": "py_zipkin.logging_end"}]}])
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_calls_become_dependency_edges() {
    let stack = TestStack::start(test_store("zipkin_dependencies").await).await;
    let store = stack.store.clone();
    let body = std::fs::read(fixtures_dir().join("zipkin-v2/simple-db-p6.json")).unwrap();
    let (status, response) = stack.post_zipkin(body, None).await;
    assert_eq!(status, 202, "{response}");
    // A peer call becomes an edge once no instrumented callee turned up for it; stopping
    // the collector settles every pending call at once.
    stack.stop().await;
    let around = 1_541_485_537u32;
    let edges = store
        .dependencies("default", around - 3_600, around + 3_600)
        .await
        .unwrap();
    let edges: Vec<_> = edges
        .into_iter()
        .map(|edge| {
            (
                edge.parent,
                edge.child,
                edge.child_type,
                edge.calls,
                edge.errors,
            )
        })
        .collect();
    assert_eq!(
        edges,
        vec![(
            "bootifulmeters".to_owned(),
            "app_db".to_owned(),
            "peer".to_owned(),
            4,
            0
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_spans_are_refused_one_by_one_and_bad_bodies_as_a_whole() {
    let config = caracal_collector::CollectorConfig {
        max_request_bytes: 64 * 1024,
        ..caracal_testkit::test_collector_config()
    };
    let stack = TestStack::start_with(test_store("zipkin_refusals").await, config).await;
    let good = |id: &str| {
        json!({"traceId": "00000000000000000000000000abcdef", "id": id, "name": "good",
               "timestamp": 1_700_000_000_000_000u64, "duration": 10,
               "localEndpoint": {"serviceName": "refusals"}})
    };
    let mut bad_trace = good("3");
    bad_trace["traceId"] = json!("not-hex");
    let mut bad_span = good("4");
    bad_span["id"] = json!("0000000000000000");
    let mut bad_parent = good("5");
    bad_parent["parentId"] = json!("zz");
    let mut wrong_shape = good("6");
    wrong_shape["duration"] = json!("ten");
    let body = json!([
        good("1"),
        bad_trace,
        bad_span,
        bad_parent,
        wrong_shape,
        good("2")
    ]);
    let (status, response) = stack
        .post_zipkin(serde_json::to_vec(&body).unwrap(), None)
        .await;
    assert_eq!(status, 202, "{response}");
    assert_eq!(response["accepted"], 2);
    assert_eq!(response["rejected"], 4);
    let message = response["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "rejected 4 spans: 1 malformed_span 1 invalid_trace_id 1 invalid_span_id \
             1 invalid_parent_span_id; first malformed span: span 4: invalid type"
        ),
        "{message}"
    );
    let trace = stored_trace(&stack, "00000000000000000000000000abcdef").await;
    let ids: Vec<&str> = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|span| span["spanID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["0000000000000001", "0000000000000002"]);

    // Whole bodies: not JSON, not an array, a binary encoding, too large.
    let (status, response) = stack.post_zipkin(b"[{\"traceId\": ".to_vec(), None).await;
    assert_eq!(status, 400);
    assert_eq!(response["code"], 3);
    assert!(
        response["message"]
            .as_str()
            .unwrap()
            .contains("invalid Zipkin JSON, expected an array of v2 spans"),
        "{response}"
    );
    let (status, _) = stack.post_zipkin(b"{\"spans\": []}".to_vec(), None).await;
    assert_eq!(status, 400);
    let response = stack
        .http_client()
        .post(format!("http://{}/api/v2/spans", stack.zipkin))
        .header("content-type", "application/x-protobuf")
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
    let (status, response) = stack.post_zipkin(vec![b' '; 64 * 1024 + 1], None).await;
    assert_eq!(status, 413, "{response}");
    let (status, response) = stack.post_zipkin(b"[]".to_vec(), None).await;
    assert_eq!(status, 202);
    assert_eq!(response["accepted"], 0);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_bodies_are_accepted_within_the_limit() {
    let config = caracal_collector::CollectorConfig {
        max_request_bytes: 64 * 1024,
        ..caracal_testkit::test_collector_config()
    };
    let stack = TestStack::start_with(test_store("zipkin_encodings").await, config).await;
    let body = std::fs::read(fixtures_dir().join("zipkin-v2/yelp.json")).unwrap();
    let num_spans = serde_json::from_slice::<Vec<Value>>(&body).unwrap().len();

    let zstd = zstd::stream::encode_all(body.as_slice(), 3).unwrap();
    let (status, response) = stack.post_zipkin(zstd, Some("zstd")).await;
    assert_eq!(status, 202, "{response}");
    assert_eq!(response["accepted"], num_spans);

    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&body).unwrap();
    let (status, response) = stack
        .post_zipkin(gzip.finish().unwrap(), Some("gzip"))
        .await;
    assert_eq!(status, 202, "{response}");
    assert_eq!(response["accepted"], num_spans);
    // The same spans twice: stored once each (copies collapse, trace by id drops them).
    let trace = stored_trace(&stack, "0000000000000000a03ee8fff1dcd9b9").await;
    assert_eq!(trace["spans"].as_array().unwrap().len(), num_spans);

    // A bomb: small when sent, over the limit once decompressed.
    let mut padded_list = b"[".to_vec();
    padded_list.extend(std::iter::repeat_n(b' ', 1 << 20));
    padded_list.push(b']');
    let bomb = zstd::stream::encode_all(padded_list.as_slice(), 3).unwrap();
    assert!(bomb.len() < 64 * 1024);
    let (status, response) = stack.post_zipkin(bomb, Some("zstd")).await;
    assert_eq!(status, 413, "{response}");

    let (status, response) = stack.post_zipkin(b"[]".to_vec(), Some("br")).await;
    assert_eq!(status, 415, "{response}");
    stack.stop().await;
}
