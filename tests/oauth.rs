//! OAuth 2.0 client credentials (API.md §13) against a token server and a receiver made
//! here: one fetch shared by many attempts, a refresh shortly before expiry, one refresh on a
//! 401, and a token server that is down recorded as `auth_error` without opening the circuit.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use common::*;
use serde_json::json;

#[derive(Default)]
struct World {
    /// Tokens the receiver accepts.
    valid: HashSet<String>,
    issued: usize,
    expires_in: u64,
    token_server_down: bool,
    /// Each token request's Authorization header and form body.
    token_requests: Vec<(String, String)>,
    /// Each webhook's Authorization header and the status it got.
    hooks: Vec<(String, u16)>,
}

struct Servers {
    url: String,
    world: Arc<Mutex<World>>,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for Servers {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

fn authorization(req: &HttpRequest) -> String {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

async fn token(req: HttpRequest, body: String, world: web::Data<Mutex<World>>) -> HttpResponse {
    let mut w = world.lock().unwrap();
    w.token_requests.push((authorization(&req), body));
    if w.token_server_down {
        return HttpResponse::ServiceUnavailable().finish();
    }
    w.issued += 1;
    let token = format!("tok-{}", w.issued);
    w.valid.insert(token.clone());
    HttpResponse::Ok()
        .json(json!({"access_token": token, "token_type": "Bearer", "expires_in": w.expires_in}))
}

async fn hook(req: HttpRequest, world: web::Data<Mutex<World>>) -> HttpResponse {
    let mut w = world.lock().unwrap();
    let auth = authorization(&req);
    let ok = auth
        .strip_prefix("Bearer ")
        .is_some_and(|t| w.valid.contains(t));
    let status = if ok { 200 } else { 401 };
    w.hooks.push((auth, status));
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
}

fn servers(expires_in: u64) -> Servers {
    let world = Arc::new(Mutex::new(World {
        expires_in,
        ..World::default()
    }));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let data = web::Data::from(world.clone());
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let server = actix_web::HttpServer::new(move || {
                actix_web::App::new()
                    .app_data(data.clone())
                    .route("/token", web::post().to(token))
                    .route("/hook", web::post().to(hook))
            })
            .workers(1)
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run();
            tx.send(server.handle()).unwrap();
            let _ = server.await;
        });
    });
    let handle = rx.recv().unwrap();
    Servers { url, world, handle }
}

fn oauth_endpoint(h: &Hookd, s: &Servers, extra: serde_json::Value) -> String {
    let mut body = json!({"auth": {
        "type": "oauth2_client_credentials",
        "token_url": format!("{}/token", s.url),
        "client_id": "hookd client",
        "client_secret": "s3cret:value",
        "scope": "webhooks.write"
    }});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    h.endpoint("t", &format!("{}/hook", s.url), &["*"], body).0
}

#[test]
fn one_token_serves_many_attempts_and_is_refreshed_near_expiry_and_once_on_a_401() {
    let s = servers(2);
    let h = Hookd::start(&[]);
    let id = oauth_endpoint(&h, &s, json!({}));
    let (_, view) = h.get(&format!("/v1/endpoints/{id}"));
    assert_eq!(view["auth"]["client_secret"], "***", "{view}");
    assert_eq!(view["auth"]["client_id"], "hookd client");

    let deliveries: Vec<String> = (0..10)
        .map(|i| h.event_delivery("t", "a", json!({"i": i})))
        .collect();
    for d in &deliveries {
        h.wait_delivery_status(d, "succeeded", Duration::from_secs(10));
    }
    {
        let w = s.world.lock().unwrap();
        assert_eq!(w.issued, 1, "one fetch for ten attempts");
        assert!(w
            .hooks
            .iter()
            .all(|(a, st)| a == "Bearer tok-1" && *st == 200));
        let (basic, form) = &w.token_requests[0];
        let expected =
            base64::engine::general_purpose::STANDARD.encode("hookd+client:s3cret%3Avalue");
        assert_eq!(basic, &format!("Basic {expected}"));
        assert!(form.contains("grant_type=client_credentials"), "{form}");
        assert!(form.contains("scope=webhooks.write"), "{form}");
    }

    // A 2 s token is refreshed once less than 0.2 s of it is left: by 2 s, a new one.
    std::thread::sleep(Duration::from_millis(2000));
    let d = h.event_delivery("t", "a", json!({"late": true}));
    h.wait_delivery_status(&d, "succeeded", Duration::from_secs(10));
    assert_eq!(s.world.lock().unwrap().issued, 2);
    assert_eq!(
        s.world.lock().unwrap().hooks.last().unwrap().0,
        "Bearer tok-2"
    );

    // Revoked early: the 401 brings one new token and one more try, in the same attempt.
    s.world.lock().unwrap().valid.clear();
    let d = h.event_delivery("t", "a", json!({"revoked": true}));
    let done = h.wait_delivery_status(&d, "succeeded", Duration::from_secs(10));
    assert_eq!(done["attempts"].as_array().unwrap().len(), 1, "{done}");
    let w = s.world.lock().unwrap();
    assert_eq!(w.issued, 3);
    let last: Vec<_> = w.hooks.iter().rev().take(2).collect();
    assert_eq!(last[0], &("Bearer tok-3".to_string(), 200));
    assert_eq!(last[1], &("Bearer tok-2".to_string(), 401));
    drop(w);
    let text = h.log_text();
    for secret in ["s3cret:value", "tok-1", "tok-2", "tok-3"] {
        assert!(!text.contains(secret), "{secret} in the log");
    }
}

#[test]
fn a_token_server_that_is_down_is_an_auth_error_and_not_the_receivers_failure() {
    let s = servers(3600);
    let h = Hookd::start(&[(
        "HOOKD_DELIVERY__RETRY_SCHEDULE",
        r#"["100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms","100ms"]"#,
    )]);
    let id = oauth_endpoint(&h, &s, json!({}));
    s.world.lock().unwrap().token_server_down = true;
    let d = h.event_delivery("t", "a", json!({}));
    wait_until(Duration::from_secs(10), "eight auth_error attempts", || {
        h.delivery(&d)["attempts"].as_array().unwrap().len() >= 8
    });
    let delivery = h.delivery(&d);
    for a in delivery["attempts"].as_array().unwrap() {
        assert_eq!(a["result"], "auth_error", "{a}");
        assert!(
            a["error"]
                .as_str()
                .unwrap()
                .contains("token endpoint answered 503"),
            "{a}"
        );
    }
    let (_, ep) = h.get(&format!("/v1/endpoints/{id}"));
    assert_eq!(ep["stats"]["state"], "active", "circuit untouched: {ep}");
    assert_eq!(ep["stats"]["consecutive_failures"], 0);
    assert!(
        s.world.lock().unwrap().hooks.is_empty(),
        "the receiver was never asked"
    );
    let metrics = h.metrics_text();
    let series = format!("hookd_attempts_total{{endpoint=\"{id}\",result=\"auth_error\"}}");
    assert!(metrics.contains(&series), "{metrics}");

    s.world.lock().unwrap().token_server_down = false;
    h.wait_delivery_status(&d, "succeeded", Duration::from_secs(10));
    let last = h.delivery(&d)["attempts"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["result"], "success");
}
