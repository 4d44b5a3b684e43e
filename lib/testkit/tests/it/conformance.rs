//! Storage conformance, after Jaeger's storage integration suite: write the shared
//! OTLP-JSON fixtures through the collector, then run a table of searches and compare the
//! returned trace ids with the expected ones, exactly.

use std::collections::BTreeSet;

use caracal_testkit::{fixtures_dir, test_store, TestStack};
use serde_json::Value;

/// The fixtures' spans start between 2017-01-25 23:56 and 2017-01-26 16:46 UTC.
const WINDOW_START_US: u64 = 1_485_300_000_000_000;
const WINDOW_END_US: u64 = 1_485_460_000_000_000;

const ALL_TYPES: &[(&str, &str)] = &[
    ("sameplacetag1", "sameplacevalue"),
    ("sameplacetag2", "123"),
    ("sameplacetag4", "true"),
    ("sameplacetag3", "72.5"),
    ("blob", "AAAwOQ=="),
];

const NO_BLOB: &[(&str, &str)] = &[
    ("sameplacetag1", "sameplacevalue"),
    ("sameplacetag2", "123"),
    ("sameplacetag4", "true"),
    ("sameplacetag3", "72.5"),
];

struct Case {
    name: &'static str,
    service: &'static str,
    operation: Option<&'static str>,
    tags: &'static [(&'static str, &'static str)],
    min_duration: Option<&'static str>,
    max_duration: Option<&'static str>,
    expected: &'static [&'static str],
}

const fn case(
    name: &'static str,
    service: &'static str,
    expected: &'static [&'static str],
) -> Case {
    Case {
        name,
        service,
        operation: None,
        tags: &[],
        min_duration: None,
        max_duration: None,
        expected,
    }
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            tags: ALL_TYPES,
            ..case("span tags of every type", "query01-service", &["1"])
        },
        Case {
            tags: ALL_TYPES,
            ..case("event (log) tags", "query02-service", &["2"])
        },
        Case {
            tags: ALL_TYPES,
            ..case("resource (process) tags", "query03-service", &["3"])
        },
        Case {
            tags: NO_BLOB,
            ..case(
                "tags spread over span, resource and event",
                "query04-service",
                &["4"],
            )
        },
        case("trace with several operations", "query05-service", &["5"]),
        Case {
            operation: Some("query06-operation"),
            ..case("operation", "query06-service", &["6"])
        },
        Case {
            operation: Some("query07-operation"),
            max_duration: Some("1us"),
            ..case("operation and max duration", "query07-service", &["7"])
        },
        Case {
            operation: Some("query08-operation"),
            min_duration: Some("4.5us"),
            max_duration: Some("5.5us"),
            ..case("operation and duration range", "query08-service", &["8"])
        },
        Case {
            min_duration: Some("4.5us"),
            max_duration: Some("5.5us"),
            ..case("duration range", "query09-service", &["9"])
        },
        Case {
            max_duration: Some("1us"),
            ..case("max duration", "query10-service", &["10"])
        },
        Case {
            min_duration: Some("2us"),
            ..case("min duration excludes short spans", "query10-service", &[])
        },
        case("service only", "query11-service", &["227"]),
        Case {
            operation: Some("query12-operation"),
            tags: ALL_TYPES,
            ..case("tags and operation", "query12-service", &["12"])
        },
        Case {
            operation: Some("query13-operation"),
            tags: &[
                ("sameplacetag1", "sameplacevalue"),
                ("tag1", "value1"),
                ("tag3", "value3"),
            ],
            max_duration: Some("1us"),
            ..case(
                "tags, operation and max duration",
                "query13-service",
                &["13"],
            )
        },
        Case {
            operation: Some("query14-operation"),
            tags: ALL_TYPES,
            min_duration: Some("4.5us"),
            max_duration: Some("5.5us"),
            ..case(
                "event tags, operation and duration range",
                "query14-service",
                &["14"],
            )
        },
        Case {
            tags: ALL_TYPES,
            min_duration: Some("4.5us"),
            max_duration: Some("5.5us"),
            ..case("tags and duration range", "query15-service", &["15"])
        },
        Case {
            tags: ALL_TYPES,
            max_duration: Some("1us"),
            ..case("resource tags and max duration", "query16-service", &["16"])
        },
        Case {
            operation: Some("query17-operation"),
            tags: NO_BLOB,
            ..case(
                "tags in several places and operation",
                "query17-service",
                &["17"],
            )
        },
        Case {
            operation: Some("query18-operation"),
            tags: ALL_TYPES,
            max_duration: Some("1us"),
            ..case(
                "tags in several places, operation, max duration",
                "query18-service",
                &["18"],
            )
        },
        Case {
            operation: Some("query19-operation"),
            tags: ALL_TYPES,
            min_duration: Some("4.5us"),
            max_duration: Some("5.5us"),
            ..case(
                "tags in several places, operation, duration range",
                "query19-service",
                &["19"],
            )
        },
        Case {
            tags: ALL_TYPES,
            min_duration: Some("4.5us"),
            max_duration: Some("5.5us"),
            ..case(
                "tags in several places and duration range",
                "query20-service",
                &["20"],
            )
        },
        Case {
            tags: ALL_TYPES,
            max_duration: Some("1us"),
            ..case(
                "tags in several places and max duration",
                "query21-service",
                &["21"],
            )
        },
        case(
            "several traces of one service",
            "query22-service",
            &["221", "222", "223"],
        ),
        Case {
            tags: &[("sameplacetag1", "same*")],
            ..case(
                "a value with a wildcard is matched literally",
                "query23-service",
                &["512"],
            )
        },
        Case {
            tags: &[("sameplacetag1", "sameplacevalue1")],
            ..case(
                "exact value among similar ones",
                "query24-service",
                &["a12"],
            )
        },
        Case {
            tags: &[("sameplacetag1", ".*")],
            ..case("a regex is not a pattern", "query24-service", &[])
        },
        Case {
            tags: &[
                ("sameplacescopeattribute1", "sameplacevalue"),
                ("sameplacescopeattribute2", "123"),
                ("sameplacescopeattribute4", "true"),
                ("sameplacescopeattribute3", "72.5"),
                ("scopeblob", "AAAwOQ=="),
            ],
            ..case("scope attributes", "query24-service", &["225"])
        },
        Case {
            tags: &[
                ("otel.scope.name", "testing-library"),
                ("otel.scope.version", "1.1.1"),
            ],
            ..case("scope name and version", "query23-service", &["224"])
        },
        Case {
            tags: &[
                ("sameplacelinkattribute1", "sameplacevalue"),
                ("sameplacelinkattribute2", "123"),
                ("sameplacelinkattribute4", "true"),
                ("sameplacelinkattribute3", "72.5"),
                ("linkblob", "AAAwOQ=="),
            ],
            ..case("link attributes", "query25-service", &["226"])
        },
        Case {
            tags: &[("sameplacetag1", "nope")],
            ..case("a wrong value matches nothing", "query01-service", &[])
        },
        Case {
            tags: &[("sameplacetag2", "124")],
            ..case("a wrong int matches nothing", "query01-service", &[])
        },
        Case {
            operation: Some("no-such-operation"),
            ..case("unknown operation", "query06-service", &[])
        },
    ]
}

fn trace_id(short: &str) -> String {
    format!("{short:0>32}")
}

async fn ingest_fixtures(stack: &TestStack) -> usize {
    let dir = fixtures_dir().join("otlp-json");
    let mut num_files = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("fixtures at {}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let body = std::fs::read(&path).unwrap();
        let (status, response) = stack.post_otlp("application/json", body).await;
        assert_eq!(
            status,
            200,
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&response)
        );
        let response: Value = serde_json::from_slice(&response).unwrap();
        assert!(
            response["partialSuccess"].is_null(),
            "{}: {response}",
            path.display()
        );
        num_files += 1;
    }
    num_files
}

async fn search(stack: &TestStack, case: &Case) -> BTreeSet<String> {
    let mut params = vec![
        ("service", case.service.to_owned()),
        ("start", WINDOW_START_US.to_string()),
        ("end", WINDOW_END_US.to_string()),
        ("limit", "100".to_owned()),
    ];
    if let Some(operation) = case.operation {
        params.push(("operation", operation.to_owned()));
    }
    if !case.tags.is_empty() {
        let tags: serde_json::Map<String, Value> = case
            .tags
            .iter()
            .map(|(key, value)| (key.to_string(), Value::String(value.to_string())))
            .collect();
        params.push(("tags", Value::Object(tags).to_string()));
    }
    if let Some(min) = case.min_duration {
        params.push(("minDuration", min.to_owned()));
    }
    if let Some(max) = case.max_duration {
        params.push(("maxDuration", max.to_owned()));
    }
    let (status, body) = stack.get_json("/api/traces", &params).await;
    assert_eq!(status, 200, "{}: {body}", case.name);
    body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: {body}", case.name))
        .iter()
        .map(|trace| trace["traceID"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_are_found_by_every_search() {
    let stack = TestStack::start(test_store("conformance").await).await;
    assert_eq!(ingest_fixtures(&stack).await, 32);

    let mut failures = Vec::new();
    for case in cases() {
        let found = search(&stack, &case).await;
        let expected: BTreeSet<String> =
            case.expected.iter().map(|short| trace_id(short)).collect();
        if found != expected {
            failures.push(format!(
                "{}: expected {expected:?}, found {found:?}",
                case.name
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} searches failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    let (_, services) = stack.get_json("/api/services", &[]).await;
    assert_eq!(services["data"].as_array().unwrap().len(), 28);
    let (_, operations) = stack
        .get_json("/api/services/query05-service/operations", &[])
        .await;
    assert_eq!(
        operations["data"],
        serde_json::json!(["operation-list-test2", "operation-list-test3"])
    );
    let (_, kinds) = stack
        .get_json(
            "/api/operations",
            &[
                ("service", "example-service-1".into()),
                ("spanKind", "server".into()),
            ],
        )
        .await;
    assert_eq!(
        kinds["data"],
        serde_json::json!([{"name": "example-operation-3", "spanKind": "server"}])
    );

    // A whole trace by id, with every span and its process.
    let (status, trace) = stack
        .get_json(&format!("/api/traces/{}", trace_id("11")), &[])
        .await;
    assert_eq!(status, 200);
    let trace = &trace["data"][0];
    assert_eq!(trace["spans"].as_array().unwrap().len(), 5);
    assert_eq!(trace["processes"].as_object().unwrap().len(), 3);

    // Links become references, typed by opentracing.ref_type.
    let (_, linked) = stack
        .get_json(&format!("/api/traces/{}", trace_id("12")), &[])
        .await;
    let ref_types: Vec<&str> = linked["data"][0]["spans"][0]["references"]
        .as_array()
        .unwrap()
        .iter()
        .map(|reference| reference["refType"].as_str().unwrap())
        .collect();
    assert_eq!(ref_types, ["CHILD_OF", "CHILD_OF", "FOLLOWS_FROM"]);

    // Typed tags come back typed.
    let (_, typed) = stack
        .get_json(&format!("/api/traces/{}", trace_id("1")), &[])
        .await;
    let tags = &typed["data"][0]["spans"][0]["tags"];
    assert!(tags
        .as_array()
        .unwrap()
        .contains(&serde_json::json!({"key": "sameplacetag2", "type": "int64", "value": 123})));
    assert!(tags
        .as_array()
        .unwrap()
        .contains(&serde_json::json!({"key": "blob", "type": "binary", "value": "AAAwOQ=="})));
    stack.stop().await;
}
