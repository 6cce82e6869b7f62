//! The API's answers to bad input: status, JSON error naming the field, nothing stored.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn assert_error(res: &(u16, Value), status: u16, code: &str, mentions: &str) {
    assert_eq!(res.0, status, "{}", res.1);
    assert_eq!(res.1["error"]["code"], code, "{}", res.1);
    let message = res.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(mentions),
        "{message:?} should mention {mentions:?}"
    );
}

#[test]
fn authentication_and_authorization() {
    let h = Hookd::start(&[]);
    let ev = json!({"tenant": "t", "type": "a", "payload": {}});
    assert_error(
        &h.request(Method::POST, "/v1/events", None, Some(&ev)),
        401,
        "unauthorized",
        "missing",
    );
    assert_error(
        &h.request(
            Method::POST,
            "/v1/events",
            Some("wrong-token-123"),
            Some(&ev),
        ),
        401,
        "unauthorized",
        "unknown",
    );
    assert_eq!(
        h.request(Method::POST, "/v1/events", Some(INGEST), Some(&ev))
            .0,
        202
    );
    assert_eq!(
        h.request(
            Method::POST,
            "/v1/events/batch",
            Some(INGEST),
            Some(&json!({"events": [ev]}))
        )
        .0,
        200
    );
    for (method, path) in [
        (Method::GET, "/v1/endpoints"),
        (Method::POST, "/v1/endpoints"),
        (Method::GET, "/v1/events/x?tenant=t"),
    ] {
        assert_error(
            &h.request(method, path, Some(INGEST), Some(&json!({}))),
            403,
            "forbidden",
            "ingest",
        );
    }
    assert_eq!(h.request(Method::GET, "/healthz", None, None).0, 200);
    assert_eq!(h.request(Method::GET, "/readyz", None, None).0, 200);
}

#[test]
fn bad_event_input_is_400_naming_the_field_and_stores_nothing() {
    let h = Hookd::start(&[]);
    let r = Receiver::start();
    h.endpoint("t", &r.url, &["*"], json!({}));
    let cases = [
        (
            json!({"type": "a", "payload": {}}),
            "invalid_field",
            "tenant",
        ),
        (
            json!({"tenant": "t", "type": "a", "payload": {}, "extra": 1}),
            "invalid_field",
            "extra",
        ),
        (
            json!({"tenant": "t", "type": 5, "payload": {}}),
            "invalid_field",
            "type",
        ),
        (
            json!({"tenant": "t", "type": "a", "payload": [1]}),
            "invalid_field",
            "payload",
        ),
        (
            json!({"tenant": "t", "type": "a b", "payload": {}}),
            "invalid_field",
            "type",
        ),
        (
            json!({"id": "", "tenant": "t", "type": "a", "payload": {}}),
            "invalid_field",
            "id",
        ),
        (
            json!({"tenant": "x".repeat(129), "type": "a", "payload": {}}),
            "invalid_field",
            "tenant",
        ),
    ];
    for (body, code, field) in cases {
        assert_error(&h.post("/v1/events", body), 400, code, field);
    }
    let raw = |body: &'static str, ct: &str| {
        let resp = h
            .raw(Method::POST, "/v1/events")
            .bearer_auth(ADMIN)
            .header("content-type", ct)
            .body(body)
            .send()
            .unwrap();
        (resp.status().as_u16(), resp.json::<Value>().unwrap())
    };
    assert_error(
        &raw("{\"tenant\": ", "application/json"),
        400,
        "invalid_json",
        "EOF",
    );
    assert_error(&raw("", "application/json"), 400, "invalid_json", "empty");
    assert_error(
        &raw(
            r#"{"tenant":"t","type":"a","payload":{}} {}"#,
            "application/json",
        ),
        400,
        "invalid_json",
        "trailing",
    );
    assert_error(
        &raw(
            r#"{"tenant":"t","type":"a","payload":{"x":1e999}}"#,
            "application/json",
        ),
        400,
        "invalid_json",
        "payload.x",
    );
    assert_error(
        &raw("tenant=t", "application/x-www-form-urlencoded"),
        415,
        "unsupported_media_type",
        "application/json",
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(r.count(), 0, "no bad request was stored or sent");
}

#[test]
fn catalogue_rejects_unknown_types() {
    let h = Hookd::start(&[("HOOKD_EVENTS__TYPES", r#"["fraud_detected"]"#)]);
    assert_error(
        &h.post(
            "/v1/events",
            json!({"tenant": "t", "type": "other", "payload": {}}),
        ),
        400,
        "unknown_event_type",
        "other",
    );
    assert_eq!(
        h.post(
            "/v1/events",
            json!({"tenant": "t", "type": "fraud_detected", "payload": {}})
        )
        .0,
        202
    );
    assert_error(
        &h.post(
            "/v1/endpoints",
            json!({"tenant": "t", "url": "http://127.0.0.1:1/", "event_types": ["nope"]}),
        ),
        400,
        "invalid_field",
        "event_types[0]",
    );
}

#[test]
fn sizes_are_limited_with_413() {
    let h = Hookd::start(&[
        ("HOOKD_EVENTS__MAX_PAYLOAD_BYTES", "1024"),
        ("HOOKD_EVENTS__MAX_BATCH_BYTES", "200000"),
    ]);
    let big = "x".repeat(2000);
    assert_error(
        &h.post(
            "/v1/events",
            json!({"tenant": "t", "type": "a", "payload": {"s": big}}),
        ),
        413,
        "payload_too_large",
        "payload",
    );
    let small: Vec<Value> = (0..1001)
        .map(|_| json!({"tenant": "t", "type": "a", "payload": {}}))
        .collect();
    assert_error(
        &h.post("/v1/events/batch", json!({"events": small})),
        413,
        "payload_too_large",
        "1000",
    );
    let huge = "y".repeat(300_000);
    assert_error(
        &h.post(
            "/v1/events/batch",
            json!({"events": [{"tenant": "t", "type": "a", "payload": {"s": huge}}]}),
        ),
        413,
        "payload_too_large",
        "larger",
    );
    // Inside a batch, one oversized item is reported and the rest are stored.
    let (status, res) = h.post(
        "/v1/events/batch",
        json!({"events": [{"tenant": "t", "type": "a", "payload": {"s": big}}, {"tenant": "t", "type": "a", "payload": {}}]}),
    );
    assert_eq!(status, 200);
    assert_eq!(res["results"][0]["error"]["code"], "payload_too_large");
    assert_eq!(res["results"][1]["duplicate"], false);
}

#[test]
fn endpoint_validation_limits_and_unknown_ids() {
    let h = Hookd::start(&[("HOOKD_DELIVERY__ALLOW_HTTP", "false")]);
    let base = json!({"tenant": "t", "url": "https://example.com/hook", "event_types": ["a"]});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let cases = [
        (with("url", json!("http://example.com/hook")), "url"),
        (with("url", json!("/relative")), "url"),
        (with("url", json!("ftp://example.com/")), "url"),
        (with("event_types", json!([])), "event_types"),
        (with("event_types", json!(["bad type"])), "event_types[0]"),
        (with("max_concurrency", json!(0)), "max_concurrency"),
        (with("max_concurrency", json!("many")), "max_concurrency"),
        (with("timeout", json!("soon")), "timeout"),
        (with("timeout", json!(10)), "timeout"),
        (with("retry_schedule", json!(["1s", "x"])), "retry_schedule"),
        (
            with("signature_header", json!("bad header")),
            "signature_header",
        ),
        (
            with("headers", json!({"webhook-id": "x"})),
            "headers.webhook-id",
        ),
        (with("colour", json!("red")), "colour"),
        (
            json!({"url": "https://example.com", "event_types": ["a"]}),
            "tenant",
        ),
    ];
    for (body, field) in cases {
        let res = h.post("/v1/endpoints", body.clone());
        assert_eq!(res.0, 400, "{body} → {}", res.1);
        let message = res.1["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{message:?} should name {field}");
    }
    assert_eq!(
        h.get("/v1/endpoints").1["endpoints"]
            .as_array()
            .unwrap()
            .len(),
        0,
        "nothing stored"
    );

    for _ in 0..5 {
        assert_eq!(h.post("/v1/endpoints", base.clone()).0, 201);
    }
    assert_error(
        &h.post("/v1/endpoints", base.clone()),
        409,
        "endpoint_limit",
        "5",
    );
    assert_eq!(
        h.post("/v1/endpoints", with("tenant", json!("other"))).0,
        201
    );
    let listed = h.get("/v1/endpoints?tenant=t").1;
    let listed = listed["endpoints"].as_array().unwrap();
    assert_eq!(listed.len(), 5);
    assert!(listed.iter().all(|e| e.get("secret").is_none()));
    assert_eq!(
        h.get("/v1/endpoints").1["endpoints"]
            .as_array()
            .unwrap()
            .len(),
        6
    );

    assert_error(
        &h.get("/v1/endpoints/ep_01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        404,
        "not_found",
        "endpoint",
    );
    assert_error(
        &h.get("/v1/endpoints/nonsense"),
        404,
        "not_found",
        "endpoint",
    );
    assert_error(
        &h.get("/v1/deliveries/dlv_01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        404,
        "not_found",
        "delivery",
    );
    assert_error(
        &h.post_empty("/v1/deliveries/dlv_01ARZ3NDEKTSV4RRFFQ69G5FAV/retry"),
        404,
        "not_found",
        "delivery",
    );
    assert_error(
        &h.get("/v1/events/nope?tenant=t"),
        404,
        "not_found",
        "event",
    );
    assert_error(&h.get("/v1/events/nope"), 400, "missing_field", "tenant");
    assert_error(
        &h.post_empty("/v1/endpoints/ep_01ARZ3NDEKTSV4RRFFQ69G5FAV/pause"),
        404,
        "not_found",
        "endpoint",
    );
    assert_error(&h.get("/v1/nothing-here"), 404, "not_found", "route");
}
