//! Failover through Pingora's hooks: statuses, resets, timeouts, key rotation, cool-downs, circuit
//! breaking, tiers, large bodies, and streams that break.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// A logical model `lm` over the given providers (all serving model `m`).
fn logical(upstreams: &[(&str, &str)]) -> String {
    let mut y = "logical_models:\n  - id: lm\n    upstreams:\n".to_string();
    for (p, extra) in upstreams {
        y.push_str(&format!("      - {{provider: {p}, model: m{extra}}}\n"));
    }
    y
}

async fn pair(extra_a: &str, server: &str) -> (Mock, Mock, Gateway) {
    let a = Mock::start("alpha", &["m"]).await;
    let b = Mock::start("beta", &["m"]).await;
    let yaml = format!(
        "{server}providers:\n{}{}{}",
        provider_yaml("alpha", &a, extra_a),
        provider_yaml("beta", &b, ""),
        logical(&[("alpha", ""), ("beta", ", priority: 1")])
    );
    (a, b, Gateway::start(&yaml).await)
}

/// The `100 Continue` is not the answer: failover and error statuses work as for any client.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_expecting_100_continue_still_gets_failover_and_error_statuses() {
    let (a, b, gw) = pair("", "").await;
    let body = chat_body("lm").to_string();
    a.script([Reply::status(503)]);
    let answer = gw.post_expecting_continue(&body).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("x-apiproxy-provider: beta"), "{answer}");
    a.script([Reply::status(503)]);
    b.script([Reply::status(503)]);
    let answer = gw.post_expecting_continue(&body).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("all_upstreams_failed"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn retryable_status_fails_over_and_tiers_hold() {
    let (a, b, gw) = pair("", "").await;
    // Tier 1 is not used while tier 0 answers.
    for _ in 0..5 {
        assert_eq!(gw.chat(chat_body("lm")).await.headers()["x-apiproxy-provider"], "alpha");
    }
    assert_eq!(b.hits(), 0);
    a.script([Reply::status(503)]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
    assert_eq!(
        r.json::<Value>().await.unwrap()["choices"][0]["message"]["content"],
        "hello from beta"
    );
    assert_eq!(b.hits(), 1);
    // An upstream's 408 (it gave up waiting for the request) is worth another upstream's try.
    a.script([Reply::status(408)]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(
        (r.status().as_u16(), &r.headers()["x-apiproxy-provider"]),
        (200, &"beta".parse().unwrap())
    );
    assert_eq!(b.hits(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_upstream_timing_out_is_a_gateway_timeout() {
    let a = Mock::start("alpha", &["m"]).await;
    let b = Mock::start("beta", &["m"]).await;
    let yaml = format!(
        "providers:\n{}{}{}",
        provider_yaml("alpha", &a, ", timeouts: {first_byte_ms: 200}"),
        provider_yaml("beta", &b, ", timeouts: {first_byte_ms: 200}"),
        logical(&[("alpha", ""), ("beta", "")])
    );
    let gw = Gateway::start(&yaml).await;
    for m in [&a, &b] {
        m.set_default(Reply::Delay(Duration::from_secs(2), Box::new(Reply::Ok)));
    }
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 504);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "all_upstreams_failed", "{v}");
    assert_eq!(v["error"]["attempts"].as_array().map(Vec::len), Some(2), "{v}");
    // Anthropic clients get their own timeout shape.
    let v = anthropic_error(&gw, "lm", 504).await;
    assert_eq!(v["error"]["type"], "timeout_error", "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_500_is_retried_once_on_the_same_upstream() {
    let (a, b, gw) = pair("", "").await;
    a.script([Reply::status(500)]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.headers()["x-apiproxy-provider"], "alpha");
    assert_eq!((a.hits(), b.hits()), (2, 0), "500 once, then the same upstream again");
    a.clear();
    a.script([Reply::status(500), Reply::status(500)]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
    assert_eq!(a.hits(), 2, "one retry on the same upstream, then the next");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_s_x_should_retry_is_obeyed() {
    let (a, b, gw) = pair("", "").await;
    // A 500 the provider says not to repeat: straight to the next candidate.
    a.script([Reply::ShouldRetry(false, Box::new(Reply::status(500)))]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
    assert_eq!((a.hits(), b.hits()), (1, 1));

    // A 409 (a lock) is the client's to see, unless the provider says another try can help.
    a.clear();
    b.clear();
    a.script([Reply::ShouldRetry(true, Box::new(Reply::status(409)))]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-apiproxy-provider"], "alpha");
    assert_eq!((a.hits(), b.hits()), (2, 0), "once more on the same upstream");
    a.clear();
    a.script([
        Reply::ShouldRetry(true, Box::new(Reply::status(409))),
        Reply::ShouldRetry(true, Box::new(Reply::status(409))),
    ]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 409, "then the provider's error goes to the client");
    assert_eq!((a.hits(), b.hits()), (2, 0));
    a.clear();
    b.clear();
    a.script([Reply::status(409)]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 409);
    assert_eq!((a.hits(), b.hits()), (1, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_without_the_model_hands_over_to_another_candidate() {
    let (a, b, gw) = pair("", "").await;
    let missing = json!({"error": {"message": "The model `m` does not exist", "type": "invalid_request_error",
        "param": null, "code": "model_not_found"}})
    .to_string();
    a.script([Reply::status_body(404, missing.clone())]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
    assert_eq!((a.hits(), b.hits()), (1, 1));
    // Not a health failure: alpha's error rate did not move, and it stays first.
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(&metrics, "apiproxy_upstream_error_rate", &[("provider", "alpha")]),
        0.0,
        "{metrics}"
    );
    assert_eq!(gw.chat(chat_body("lm")).await.headers()["x-apiproxy-provider"], "alpha");
    // Alone on its route, the 404 reaches the client as the provider said it.
    a.script([Reply::status_body(404, missing.clone())]);
    let r = gw.chat(chat_body("alpha/m")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap(), missing);
}

/// An Anthropic client's request for `model` that must end in a 502: its error body.
async fn anthropic_bad_gateway(gw: &Gateway, model: &str) -> Value {
    anthropic_error(gw, model, 502).await
}

/// An Anthropic client's request for `model`, answered with the error `status`: its body.
async fn anthropic_error(gw: &Gateway, model: &str, status: u16) -> Value {
    let body = json!({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]});
    let r = gw
        .post("/v1/messages", body, &[("anthropic-version", "2023-06-01")])
        .await;
    assert_eq!(r.status(), status);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_answer_cut_short_is_retried_not_relayed() {
    let (a, b, gw) = failover_pair().await;
    // Alpha announces 4 KiB and drops the connection after 2: the client must not get half a JSON
    // document under a 200. Nothing has reached it yet, so the request is tried again like any
    // reset: once more on alpha, which answers whole.
    a.script([Reply::CutShort]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("a whole JSON answer");
    assert_eq!(v["choices"][0]["message"]["content"], "hello from alpha");
    assert_eq!((a.hits(), b.hits()), (2, 0));

    // Cut short twice: beta answers.
    a.script([Reply::CutShort, Reply::CutShort]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("a whole JSON answer");
    assert_eq!(v["choices"][0]["message"]["content"], "hello from beta");
    assert_eq!((a.hits(), b.hits()), (4, 1));
    let text = gw.metrics().await;
    let cut = [("provider", "alpha"), ("outcome", "transport_error")];
    assert_eq!(metric(&text, "apiproxy_upstream_attempts_total", &cut), 3.0, "{text}");
    assert_eq!(metric(&text, "apiproxy_failovers_total", &[]), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_translated_answer_past_the_hold_that_breaks_is_retried_not_cut() {
    let (a, b, gw) = failover_pair().await;
    // An Anthropic client on OpenAI upstreams: the answer is translated, so the gateway reads all
    // of it before the client gets a byte. Alpha announces 200 KiB and drops after 100: past the
    // 64 KiB an untranslated answer is held for, yet nothing has reached the client, so the request
    // goes on (alpha again, then beta) instead of ending in a 200 with a broken body.
    a.script([Reply::LargeCutShort(200_000), Reply::LargeCutShort(200_000)]);
    let body = json!({"model": "lm", "max_tokens": 50, "messages": [{"role": "user", "content": "x"}]});
    let r = gw.post("/v1/messages", body.clone(), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
    let v: Value = r.json().await.expect("a whole JSON answer");
    assert_eq!(v["content"][0]["text"], "hello from beta", "{v}");
    assert_eq!((a.hits(), b.hits()), (2, 1));

    // A whole translated answer that large still arrives whole.
    a.script([Reply::Large(200_000)]);
    let r = gw.post("/v1/messages", body, &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-apiproxy-provider"], "alpha");
    let v: Value = r.json().await.expect("a whole JSON answer");
    assert_eq!(
        v["content"][0]["text"].as_str().map(str::len),
        Some(200_000),
        "the whole text"
    );
}

/// A whole JSON answer that breaks off after a long pause is still held (only streams are released
/// by the hold's clock): nothing of it reached the client, so it is retried, never relayed cut.
#[tokio::test(flavor = "multi_thread")]
async fn a_whole_answer_that_breaks_off_after_a_long_pause_is_retried() {
    let (a, b, gw) = failover_pair().await;
    a.script([Reply::SlowCut(Duration::from_secs(6))]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("a whole JSON answer");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("hello from"),
        "a whole answer from the next attempt: {v}"
    );
    assert_eq!(a.hits() + b.hits(), 2, "tried again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_answer_is_timed_from_its_header_not_its_release() {
    let (a, b, gw) = failover_pair().await;
    // Alpha sends its header and half the body at once, the rest 600 ms later. The answer is held
    // to its end, but its time to first byte (and alpha's health latency) is the header's arrival;
    // the slow body counts as upstream time, not the gateway's overhead.
    a.script([Reply::SlowBody(Duration::from_millis(600))]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("a whole JSON answer");
    assert_eq!(v["choices"][0]["message"]["content"].as_str().map(str::len), Some(4096));
    assert_eq!((a.hits(), b.hits()), (1, 0));
    let text = gw.metrics().await;
    let alpha = [("provider", "alpha")];
    assert_eq!(
        metric(&text, "apiproxy_upstream_ttfb_seconds_count", &alpha),
        1.0,
        "{text}"
    );
    let ttfb = metric(&text, "apiproxy_upstream_ttfb_seconds_sum", &alpha);
    assert!(ttfb < 0.3, "time to first byte {ttfb} s");
    let ewma = metric(&text, "apiproxy_upstream_latency_ewma_seconds", &alpha);
    assert!(ewma > 0.0 && ewma < 0.3, "health latency {ewma} s");
    let total = metric(&text, "apiproxy_request_duration_seconds_sum", &[]);
    assert!(total >= 0.6, "request duration {total} s");
    let overhead = metric(&text, "apiproxy_gateway_overhead_seconds_sum", &[]);
    assert!(overhead < 0.3, "overhead {overhead} s");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_answer_larger_than_the_hold_is_relayed_whole() {
    let (a, b, gw) = failover_pair().await;
    // Past the hold's 64 KiB the answer goes on as it comes; the client still gets all of it.
    a.script([Reply::Large(300 * 1024)]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("a whole JSON answer");
    assert_eq!(
        v["choices"][0]["message"]["content"].as_str().map(str::len),
        Some(300 * 1024)
    );
    assert_eq!((a.hits(), b.hits()), (1, 0));
    let text = gw.metrics().await;
    assert!(
        metric(&text, "apiproxy_tokens_total", &[("provider", "alpha")]) > 0.0,
        "usage read"
    );
}

/// Alpha answers `reply` to a whole request and then to a stream; each time beta answers instead.
/// The bodies the client got.
async fn beta_answers_after(a: &Mock, gw: &Gateway, reply: Reply) -> Vec<String> {
    let mut bodies = Vec::new();
    for stream in [false, true] {
        a.script([reply.clone()]);
        let r = gw
            .chat(json!({"model": "lm", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}))
            .await;
        assert_eq!(r.status(), 200, "stream={stream}");
        assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
        bodies.push(r.text().await.unwrap());
    }
    bodies
}

#[tokio::test(flavor = "multi_thread")]
async fn a_web_page_under_200_is_no_answer() {
    let (a, b, gw) = pair("", "").await;
    // A base_url that points at a website, a captive portal, a proxy's login page: the next
    // candidate answers, for a whole answer and for a stream.
    for body in beta_answers_after(&a, &gw, Reply::WebPage).await {
        assert!(
            !body.contains("<html") && (body.contains("hello from beta") || body.contains("[DONE]")),
            "{body}"
        );
    }
    assert_eq!((a.hits(), b.hits()), (2, 2));
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "apiproxy_upstream_attempts_total",
            &[("provider", "alpha"), ("outcome", "5xx")]
        ),
        2.0
    );
    assert_eq!(
        metric(&m, "apiproxy_failovers_total", &[("reason", "server_error")]),
        2.0
    );
    // Alone on its route: a bad gateway in the client's own format that says what came back, never
    // the page under a 200.
    a.script([Reply::WebPage]);
    let r = gw.chat(chat_body("alpha/m")).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "all_upstreams_failed", "{v}");
    assert_eq!(v["error"]["attempts"][0]["status"], 502, "{v}");
    assert_eq!(
        v["error"]["attempts"][0]["error"], "answered 200 with a web page (text/html)",
        "{v}"
    );
    a.script([Reply::WebPage]);
    let v = anthropic_bad_gateway(&gw, "alpha/m").await;
    assert_eq!(v["type"], "error", "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("alpha: status 502, answered 200 with a web page (text/html)"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_candidate_skipped_without_sending_is_counted_as_skipped() {
    let (a, b, gw) = pair("", "").await;
    // Alpha refuses its only key: the key rests, so the next request passes alpha by without
    // sending anything. That is not a transport error of alpha's.
    a.script([Reply::status(401)]);
    for _ in 0..2 {
        let r = gw.chat(chat_body("lm")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
    }
    assert_eq!((a.hits(), b.hits()), (1, 2));
    let m = gw.metrics().await;
    let alpha = |outcome| {
        metric(
            &m,
            "apiproxy_upstream_attempts_total",
            &[("provider", "alpha"), ("outcome", outcome)],
        )
    };
    assert_eq!(
        (alpha("4xx"), alpha("skipped"), alpha("transport_error")),
        (1.0, 1.0, 0.0),
        "{m}"
    );
    // The first request: alpha's 401 (its only key refused: alpha is done for this request, not
    // picked again to be passed by), then beta: one failover for auth, no retry. The second:
    // alpha skipped (no key in rotation), beta.
    assert_eq!(metric(&m, "apiproxy_retries_total", &[]), 0.0, "{m}");
    assert_eq!(
        metric(&m, "apiproxy_failovers_total", &[("reason", "auth")]),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "apiproxy_failovers_total", &[("reason", "no_key")]),
        1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_answer_under_200_is_no_answer() {
    let (a, b, gw) = pair("", "").await;
    // Every call the gateway proxies asks for content: an empty 200 is a bad gateway, and the next
    // candidate answers, for a whole answer and for a stream.
    for body in beta_answers_after(&a, &gw, Reply::Empty).await {
        assert!(body.contains("hello from beta") || body.contains("tok0"), "{body}");
    }
    assert_eq!((a.hits(), b.hits()), (2, 2));
    let m = gw.metrics().await;
    let alpha_5xx = [("provider", "alpha"), ("outcome", "5xx")];
    assert_eq!(metric(&m, "apiproxy_upstream_attempts_total", &alpha_5xx), 2.0, "{m}");
    // Alone on its route: a 502 that says what came back.
    a.script([Reply::Empty]);
    let r = gw.chat(chat_body("alpha/m")).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["error"]["attempts"][0]["error"], "answered 200 with an empty body",
        "{v}"
    );
}

/// A stream that ends without one event (an empty chunked body, or only pings and comments) is
/// no answer either: the next candidate streams, and the empty one is not counted healthy.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_with_no_event_is_no_answer() {
    let (a, b, gw) = pair("", "").await;
    let empty_chunked = Reply::Raw(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n".into(),
    );
    let only_pings = Reply::Sse(vec![": PROCESSING\n\n".into(), ": PROCESSING\n\n".into()]);
    for reply in [empty_chunked, only_pings] {
        a.script([reply]);
        let r = gw
            .chat(json!({"model": "lm", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
        let body = r.text().await.unwrap();
        assert!(body.contains("tok0") && body.contains("[DONE]"), "{body}");
    }
    assert_eq!((a.hits(), b.hits()), (2, 2));
    let m = gw.metrics().await;
    let alpha_5xx = [("provider", "alpha"), ("outcome", "5xx")];
    assert_eq!(metric(&m, "apiproxy_upstream_attempts_total", &alpha_5xx), 2.0, "{m}");
}

/// A whole answer the client would get translated but that cannot be read (no choice in it, not
/// JSON at all) is no answer: the next candidate answers, instead of the client getting an error
/// body under a 200.
#[tokio::test(flavor = "multi_thread")]
async fn a_whole_answer_that_cannot_be_translated_is_no_answer() {
    let (a, b, gw) = pair("", "").await;
    let raw = |body: &str| {
        Reply::Raw(format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ))
    };
    for reply in [raw(r#"{"choices":[]}"#), raw("not json at all")] {
        a.script([reply]);
        let r = gw
            .client
            .post(gw.url("/v1/messages"))
            .header("x-api-key", CLIENT_KEY)
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": "lm", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["type"], "message", "{v}");
        assert!(
            v["content"][0]["text"].as_str().unwrap().contains("hello from beta"),
            "{v}"
        );
    }
    assert_eq!((a.hits(), b.hits()), (2, 2));
    // Alone on its route: a 502 in the client's format that says what came back.
    a.script([raw(r#"{"choices":[]}"#)]);
    let r = gw
        .client
        .post(gw.url("/v1/messages"))
        .header("x-api-key", CLIENT_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "alpha/m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("could not be read"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compressed_answer_the_gateway_did_not_ask_for_is_no_answer() {
    let (a, b, gw) = pair("", "").await;
    // A server (or a proxy in between) that compresses though `accept-encoding: identity` was sent:
    // the gateway could read neither usage, nor an error, nor translate it.
    let gzip = Reply::Raw(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\ncontent-length: 4\r\n\r\n\u{1f}\u{8b}\u{8}\u{0}".into(),
    );
    for body in beta_answers_after(&a, &gw, gzip.clone()).await {
        assert!(body.contains("hello from beta") || body.contains("tok0"), "{body}");
    }
    assert_eq!((a.hits(), b.hits()), (2, 2));
    a.script([gzip]);
    let r = gw.chat(chat_body("alpha/m")).await;
    assert_eq!(r.status(), 502);
    assert!(r.headers().get("content-encoding").is_none());
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("compressed"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_is_no_answer() {
    let (a, b, gw) = pair("", "").await;
    // A captive portal, a login proxy, an http `base_url` sent to https: never an LLM API's answer.
    let redirect =
        Reply::Raw("HTTP/1.1 302 Found\r\nlocation: https://portal.example/login\r\ncontent-length: 0\r\n\r\n".into());
    for body in beta_answers_after(&a, &gw, redirect.clone()).await {
        assert!(body.contains("hello from beta") || body.contains("tok0"), "{body}");
    }
    assert_eq!((a.hits(), b.hits()), (2, 2));
    // Alone on its route: a 502 that says what came back, without the redirect's `location`.
    a.script([redirect]);
    let r = gw.chat(chat_body("alpha/m")).await;
    assert_eq!(r.status(), 502);
    assert!(r.headers().get("location").is_none());
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["error"]["attempts"][0]["error"], "answered 302 with a redirect (3xx)",
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_json_answer_whose_end_only_the_close_marks_is_judged_whole() {
    let (a, b, gw) = pair("", "").await;
    // Neither a length nor chunks: the connection's close ends the body, so a cut looks like the
    // end. Half a document, or nothing, is no answer; the next candidate answers.
    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n";
    for body in ["", "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"choi"] {
        a.script([Reply::Raw(format!("{head}{body}"))]);
        let r = gw.chat(chat_body("lm")).await;
        assert_eq!(r.status(), 200, "{body:?}");
        assert_eq!(r.headers()["x-apiproxy-provider"], "beta", "{body:?}");
    }
    assert_eq!((a.hits(), b.hits()), (2, 2));
    // A whole document framed the same way is an answer.
    let whole = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"closed at the end"},"finish_reason":"stop"}]}"#;
    a.script([Reply::Raw(format!("{head}{whole}"))]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.headers()["x-apiproxy-provider"], "alpha");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "closed at the end");
    a.script([Reply::Raw(format!("{head}{{\"id\":\"x\",\"cho"))]);
    let v: Value = gw.chat(chat_body("alpha/m")).await.json().await.unwrap();
    assert_eq!(
        v["error"]["attempts"][0]["error"],
        "answered 200 with a JSON body cut short (no length; the connection closed)",
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_absurd_retry_after_is_bounded() {
    let (a, b, gw) = pair("", "").await;
    // Larger than any clock: the upstream cools down for the longest allowed wait, the request
    // goes on to the next candidate, and the gateway goes on serving.
    let limited = |after: &str| {
        Reply::Raw(format!(
            "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: {after}\r\ncontent-length: 2\r\n\r\n{{}}"
        ))
    };
    a.script([limited("99999999999999999999")]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.headers()["x-apiproxy-provider"], "beta", "alpha cools down");
    assert_eq!((a.hits(), b.hits()), (1, 2));
    // Alone on a route, the client is told to come back within the bound, not in 3 billion years.
    let (a, _b, gw) = pair("", "").await;
    a.script([limited("1e19")]);
    let r = gw.chat(chat_body("alpha/m")).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "3600");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_object_under_200_is_judged_as_the_error_it_is() {
    let (a, b, gw) = pair("", "").await;
    // An overload said under a 200: the next candidate answers.
    let overloaded = r#"{"error":{"message":"The server is overloaded","type":"service_unavailable_error"}}"#;
    a.script([Reply::status_body(200, overloaded)]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
    assert!(r.text().await.unwrap().contains("hello from beta"));
    assert_eq!((a.hits(), b.hits()), (1, 1));
    // The client's own mistake under a 200, alone on its route: the client gets it as the 400 it is,
    // not retried.
    let too_long = r#"{"error":{"message":"This model's maximum context length is 8192 tokens","type":"invalid_request_error","code":"context_length_exceeded"}}"#;
    a.script([Reply::status_body(200, too_long)]);
    let r = gw.chat(chat_body("alpha/m")).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.headers()["x-gateway-upstream-status"],
        "200",
        "what the provider sent"
    );
    assert_eq!(r.text().await.unwrap(), too_long);
    assert_eq!(a.hits(), 2);
    // A provider error under a 200 (as OpenRouter sends one), for an Anthropic client: tried again
    // like a 500, then a bad gateway in the client's format that says what came back.
    let provider = r#"{"error":{"message":"Provider returned error","code":502}}"#;
    a.script([Reply::status_body(200, provider), Reply::status_body(200, provider)]);
    let v = anthropic_bad_gateway(&gw, "alpha/m").await;
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("alpha: status 500, Upstream error as a 200 answer"),
        "{v}"
    );
    assert_eq!(a.hits(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_errors_pass_through_and_are_not_retried() {
    let (a, b, gw) = pair("", "").await;
    let msg = r#"{"error":{"message":"This model's maximum context length is 8192 tokens","type":"invalid_request_error","code":"context_length_exceeded"}}"#;
    a.script([Reply::status_body(400, msg)]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-apiproxy-provider"], "alpha");
    assert_eq!(r.text().await.unwrap(), msg);
    assert_eq!((a.hits(), b.hits()), (1, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_errors_reset_and_slow_first_byte_fail_over() {
    let b = Mock::start("beta", &["m"]).await;
    let slow = Mock::start("slow", &["m"]).await;
    let dead = DeadPort::new();
    let dead_port = dead.port;
    let yaml = format!(
        "providers:\n  - {{id: dead, base_url: \"http://127.0.0.1:{dead_port}\", models: [m], timeouts: {{connect_ms: 500}}}}\n{}{}{}",
        provider_yaml("slow", &slow, ", timeouts: {first_byte_ms: 300}"),
        provider_yaml("beta", &b, ""),
        "logical_models:\n  - id: via-dead\n    upstreams: [{provider: dead, model: m}, {provider: beta, model: m, priority: 1}]\n  - id: via-slow\n    upstreams: [{provider: slow, model: m}, {provider: beta, model: m, priority: 1}]\n"
    );
    let gw = Gateway::start(&yaml).await;

    let r = gw.chat(chat_body("via-dead")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-apiproxy-provider"], "beta");

    slow.set_default(Reply::Delay(Duration::from_secs(5), Box::new(Reply::Ok)));
    for stream in [false, true] {
        let started = Instant::now();
        let r = gw
            .chat(json!({"model": "via-slow", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}))
            .await;
        assert_eq!(r.headers()["x-apiproxy-provider"], "beta", "stream={stream}");
        let body = r.text().await.unwrap();
        assert!(body.contains("hello from beta") || body.contains("[DONE]"), "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a silent provider costs its first-byte timeout only: {:?}",
            started.elapsed()
        );
    }

    slow.set_default(Reply::Reset);
    let r = gw.chat(chat_body("via-slow")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_requests_fail_over_before_the_first_byte() {
    let (a, _b, gw) = pair("", "").await;
    a.script([Reply::status(502)]);
    let r = gw
        .chat(json!({"model": "lm", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
    let data = sse_data(r).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_one_mib_body_fails_over_whole() {
    let (a, b, gw) = pair("", "").await;
    a.script([Reply::status(503)]);
    let content = "y".repeat(1024 * 1024);
    let r = gw
        .chat(json!({"model": "lm", "messages": [{"role": "user", "content": content}]}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
    let (sent_a, sent_b) = (&a.requests()[0], &b.requests()[0]);
    assert_eq!(sent_a.body.len(), sent_b.body.len());
    assert!(sent_b.body.len() > 1024 * 1024);
    assert_eq!(
        sent_b.json()["messages"][0]["content"].as_str().unwrap().len(),
        1024 * 1024
    );
    assert_eq!(sent_b.json()["model"], "m");
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_provider_rests_for_retry_after() {
    let a = Mock::start("alpha", &["m"]).await;
    let b = Mock::start("beta", &["m"]).await;
    let yaml = format!(
        "providers:\n{}{}{}",
        provider_yaml("alpha", &a, ""),
        provider_yaml("beta", &b, ""),
        logical(&[("alpha", ", weight: 100"), ("beta", ", weight: 1")])
    );
    let gw = Gateway::start(&yaml).await;
    a.script([Reply::Status {
        status: 429,
        retry_after: Some(2),
        body: "{}".into(),
    }]);
    let limited_at = Instant::now();
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
    // Only while the Retry-After window is surely open (a loaded machine can be slow).
    for _ in 0..10 {
        if limited_at.elapsed() > Duration::from_millis(1500) {
            break;
        }
        assert_eq!(gw.chat(chat_body("lm")).await.headers()["x-apiproxy-provider"], "beta");
    }
    assert_eq!(a.hits(), 1, "not asked again before Retry-After");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let served: Vec<String> = futures_util::future::join_all((0..5).map(|_| gw.chat(chat_body("lm"))))
        .await
        .iter()
        .map(|r| r.headers()["x-apiproxy-provider"].to_str().unwrap().to_string())
        .collect();
    assert!(
        served.iter().any(|p| p == "alpha"),
        "alpha is back after Retry-After: {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn all_failed_gives_a_summary_without_secrets() {
    let (a, b, gw) = pair("", "").await;
    a.set_default(Reply::status(502));
    b.set_default(Reply::Reset);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 502);
    let text = r.text().await.unwrap();
    assert!(!text.contains("secret"), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "all_upstreams_failed");
    let attempts = v["error"]["attempts"].as_array().unwrap();
    assert!(
        attempts.iter().any(|x| x["provider"] == "alpha" && x["status"] == 502),
        "{attempts:?}"
    );
    assert!(
        attempts
            .iter()
            .any(|x| x["provider"] == "beta" && x["error"].is_string()),
        "{attempts:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn everyone_rate_limited_is_429_with_retry_after() {
    let (a, b, gw) = pair("", "").await;
    a.set_default(Reply::Status {
        status: 429,
        retry_after: Some(7),
        body: "{}".into(),
    });
    b.set_default(Reply::Status {
        status: 429,
        retry_after: Some(9),
        body: "{}".into(),
    });
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 429);
    let ra: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((6..=7).contains(&ra), "earliest comeback is alpha's 7 s: {ra}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
    assert_eq!(v["error"]["code"], "all_upstreams_failed", "{v}");
    // While both rest, nobody is asked, and the client hears the same (Anthropic: its own type).
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 429);
    let body = json!({"model": "lm", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
    let r = gw.post("/v1/messages", body, &[]).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
    assert_eq!((a.hits(), b.hits()), (1, 1));
    // The upstreams' doing, not a refusal of the client's request.
    let m = gw.metrics().await;
    let requests = |outcome: &str| metric(&m, "apiproxy_requests_total", &[("outcome", outcome)]);
    assert_eq!((requests("upstream_error"), requests("rejected")), (3.0, 0.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limit_beside_a_broken_upstream_is_503() {
    let (a, b, gw) = pair("", "").await;
    a.set_default(Reply::status_retry_after(429, 7));
    b.set_default(Reply::status(503));
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 503, "not only rate limits: come back later, but not a 429");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "all_upstreams_failed", "{v}");
}

/// The answer when the one upstream that could take the request rests after a rate limit.
async fn expect_429(r: reqwest::Response, when: &str) {
    assert_eq!(r.status(), 429, "{when}: the one upstream that could answer rests");
    let ra: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=7).contains(&ra), "{when}: {ra}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "all_upstreams_failed", "{when}: {v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_candidate_that_cannot_take_the_request_does_not_hide_a_rate_limit() {
    // Alpha (OpenAI) can take `n: 2`; beta (Anthropic, tier 1) has no faithful translation of it.
    let a = Mock::start("alpha", &["m"]).await;
    let b = Mock::start_style("beta", &["m"], Style::Anthropic).await;
    let yaml = format!(
        "providers:\n{}{}{}",
        provider_yaml("alpha", &a, ""),
        provider_yaml_styled("beta", &b, ""),
        logical(&[("alpha", ""), ("beta", ", priority: 1")])
    );
    let gw = Gateway::start(&yaml).await;
    a.set_default(Reply::status_retry_after(429, 7));
    let body = json!({"model": "lm", "n": 2, "messages": [{"role": "user", "content": "hi"}]});
    // Alpha's 429, then beta passed by: a rate limit, not an outage.
    expect_429(gw.chat(body.clone()).await, "first request").await;
    // Alpha rests, beta passed by without anything sent: still the rate limit, not a 400.
    expect_429(gw.chat(body.clone()).await, "while alpha rests").await;
    assert_eq!((a.hits(), b.hits()), (1, 0));

    // Alpha overloaded: the client hears of the overload (come back later), not of beta's format.
    a.set_default(Reply::status(503));
    let gw = Gateway::start(&yaml).await;
    let r = gw.chat(body.clone()).await;
    assert_eq!(r.status(), 503, "{}", r.text().await.unwrap());

    // A request no candidate can take is the client's: a 400 that says why.
    let only_beta = format!(
        "providers:\n{}logical_models:\n  - {{id: lm, upstreams: [{{provider: beta, model: m}}]}}\n",
        provider_yaml_styled("beta", &b, "")
    );
    let gw = Gateway::start(&only_beta).await;
    let r = gw.chat(body).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unsupported_for_upstream", "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_provider_key_rotates_out() {
    let a = Mock::start("alpha", &["m"]).await;
    let yaml = format!(
        "providers:\n  - {{id: alpha, base_url: \"{}\", models: [m], api_keys: [\"sk-first-secret\", \"sk-second-secret\"]}}\n",
        a.url()
    );
    let gw = Gateway::start(&yaml).await;
    // Whichever key goes first gets a 401; the other must be used, and the refused one never again.
    a.script([Reply::status(401)]);
    let r = gw.chat(chat_body("m")).await;
    assert_eq!(r.status(), 200);
    let reqs = a.requests();
    let bad = reqs[0].header("authorization").unwrap().to_string();
    let good = reqs[1].header("authorization").unwrap().to_string();
    assert_ne!(bad, good);
    for _ in 0..6 {
        assert_eq!(gw.chat(chat_body("m")).await.status(), 200);
    }
    assert!(a.requests()[2..]
        .iter()
        .all(|r| r.header("authorization") == Some(good.as_str())));
    assert!(!gw.logs().contains("sk-first-secret") && !gw.logs().contains("sk-second-secret"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_forbidden_one_request_stays_in_rotation_for_the_others() {
    let a = Mock::start("alpha", &["m", "gated"]).await;
    let yaml = format!(
        "providers:\n  - {{id: alpha, base_url: \"{}\", models: [m, gated], api_keys: [\"sk-first-secret\", \"sk-second-secret\"]}}\n",
        a.url()
    );
    let gw = Gateway::start(&yaml).await;
    // A model the provider's project may not use: both keys are refused it (403), and the client
    // is told, with the upstream's own 403 (which no SDK retries, where it would retry a 502); a
    // client can name any model, so this must not take the keys out for everyone.
    let forbidden = r#"{"error":{"message":"Project does not have access to model gated","type":"invalid_request_error","code":"model_not_found"}}"#;
    a.script([Reply::status_body(403, forbidden), Reply::status_body(403, forbidden)]);
    let r = gw.chat(chat_body("gated")).await;
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("Project does not have access to model gated"), "{text}");
    let refused: Vec<String> = a
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_string())
        .collect();
    assert_eq!(refused.len(), 2, "each key tried once: {refused:?}");
    assert_ne!(refused[0], refused[1]);
    for _ in 0..4 {
        assert_eq!(gw.chat(chat_body("m")).await.status(), 200);
    }
    let used: std::collections::HashSet<String> = a.requests()[2..]
        .iter()
        .map(|r| r.header("authorization").unwrap().to_string())
        .collect();
    assert_eq!(used.len(), 2, "both keys still serve other requests: {used:?}");
}

/// More keys than attempts, each refused the model (403): the last attempt's 403 reaches the client
/// (no SDK retries it), not a 502 "all upstreams failed" every SDK sends again.
#[tokio::test(flavor = "multi_thread")]
async fn a_403_on_the_last_attempt_reaches_the_client() {
    let a = Mock::start("alpha", &["gated"]).await;
    let keys: Vec<String> = (0..5).map(|i| format!("\"sk-key{i}-secret\"")).collect();
    let yaml = format!(
        "providers:\n  - {{id: alpha, base_url: \"{}\", models: [gated], api_keys: [{}]}}\n",
        a.url(),
        keys.join(", ")
    );
    let gw = Gateway::start(&yaml).await;
    let forbidden = r#"{"error":{"message":"Project does not have access to model gated","type":"invalid_request_error","code":"model_not_found"}}"#;
    a.set_default(Reply::status_body(403, forbidden));
    let r = gw.chat(chat_body("gated")).await;
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("Project does not have access to model gated"), "{text}");
    assert_eq!(a.requests().len(), 4, "max_attempts");
}

/// Mistral refuses `stream_options` (422 `extra_forbidden` on `include_usage`), Azure's older API
/// versions the field itself (400 "Unknown parameter"); the gateway adds it to count a stream's
/// tokens: the stream is asked again at once without it, and so from then on, for same-format and
/// translated clients alike.
#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_refuses_stream_options_is_asked_without_them() {
    for refusal in [Mock::MISTRAL_STREAM_OPTIONS, Mock::AZURE_STREAM_OPTIONS] {
        let a = Mock::start("refuses", &["m"]).await;
        a.set_refuse_stream_options(Some(refusal));
        let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("refuses", &a, ""))).await;
        let stream = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
        let r = gw.chat(stream.clone()).await;
        assert_eq!(r.status(), 200, "{refusal:?}");
        let data = sse_data(r).await;
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
        let sent = a.requests();
        assert_eq!(sent.len(), 2, "refused, then asked without the field");
        assert!(sent[0].json().get("stream_options").is_some());
        assert!(sent[1].json().get("stream_options").is_none(), "{}", sent[1].json());
        // From now on without it: one request each, a translated one included.
        assert_eq!(gw.chat(stream).await.status(), 200);
        let anthropic = json!({"model": "m", "max_tokens": 20, "stream": true,
            "messages": [{"role": "user", "content": "hi"}]});
        let r = gw
            .post("/v1/messages", anthropic, &[("anthropic-version", "2023-06-01")])
            .await;
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("message_stop"));
        assert_eq!(a.requests().len(), 4);
        let text = gw.metrics().await;
        assert_eq!(
            metric(&text, "apiproxy_requests_total", &[("status_class", "4xx")]),
            0.0,
            "{text}"
        );
        // Asked again without the field is the same attempt: no 4xx attempt, no retry.
        let attempts = |outcome| metric(&text, "apiproxy_upstream_attempts_total", &[("outcome", outcome)]);
        assert_eq!((attempts("2xx"), attempts("4xx")), (3.0, 0.0), "{text}");
        assert_eq!(metric(&text, "apiproxy_retries_total", &[]), 0.0, "{text}");
    }
}

/// An upstream that echoes a client's own unknown field, whose name merely contains
/// `stream_options`, refuses it again when asked without the gateway's field: the upstream is
/// not taken for one that refuses the field, and the next stream still counts its tokens.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_s_field_named_like_stream_options_teaches_nothing() {
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    let echo = r#"{"error":{"message":"Unrecognized request argument supplied: stream_options_include_usage","type":"invalid_request_error","param":null,"code":null}}"#;
    a.script([Reply::status_body(400, echo), Reply::status_body(400, echo)]);
    let odd = json!({"model": "m", "stream": true, "stream_options_include_usage": 1,
        "messages": [{"role": "user", "content": "hi"}]});
    let r = gw.chat(odd).await;
    assert_eq!(r.status(), 400);
    assert_eq!(a.requests().len(), 2, "asked once more without the gateway's field");
    let stream = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(gw.chat(stream).await.status(), 200);
    let sent = a.last().unwrap().json();
    assert_eq!(sent["stream_options"]["include_usage"], true, "{sent}");
}

/// A 400 about a client's own `stream_options` member is the client's: the upstream still gets
/// the gateway's `include_usage` on the next stream.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_s_own_stream_options_error_is_no_refusal_of_the_field() {
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    let bad = r#"{"error":{"message":"Invalid value for 'stream_options.include_obfuscation': expected a boolean.","type":"invalid_request_error","param":"stream_options.include_obfuscation","code":"invalid_type"}}"#;
    a.script([Reply::status_body(400, bad)]);
    let stream = |options: Value| json!({"model": "m", "stream": true, "stream_options": options, "messages": [{"role": "user", "content": "hi"}]});
    let r = gw.chat(stream(json!({"include_obfuscation": "no"}))).await;
    assert_eq!(r.status(), 400);
    assert_eq!(a.requests().len(), 1, "the client's error, not tried again");
    let r = gw.chat(stream(json!({}))).await;
    assert_eq!(r.status(), 200);
    let sent = a.last().unwrap().json();
    assert_eq!(sent["stream_options"]["include_usage"], true, "{sent}");
}

/// OpenRouter's 402 for one request's `max_tokens` (the balance covers smaller ones): the keys stay
/// in rotation, and the client reads the upstream's advice.
#[tokio::test(flavor = "multi_thread")]
async fn a_402_for_one_request_s_max_tokens_benches_no_key() {
    let a = Mock::start("alpha", &["m"]).await;
    let yaml = format!(
        "providers:\n  - {{id: alpha, base_url: \"{}\", models: [m], api_keys: [\"sk-first-secret\", \"sk-second-secret\"]}}\n",
        a.url()
    );
    let gw = Gateway::start(&yaml).await;
    let unaffordable = r#"{"error":{"message":"This request requires more credits, or fewer max_tokens. You requested up to 65536 tokens, but can only afford 30104. To increase, visit https://openrouter.ai/settings/credits and upgrade to a paid account","code":402}}"#;
    a.script([
        Reply::status_body(402, unaffordable),
        Reply::status_body(402, unaffordable),
    ]);
    let r = gw.chat(chat_body("m")).await;
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 402, "the upstream's own status, which no SDK retries: {text}");
    assert!(text.contains("fewer max_tokens"), "{text}");
    assert_eq!(a.requests().len(), 2, "each key tried once");
    for _ in 0..4 {
        assert_eq!(gw.chat(chat_body("m")).await.status(), 200);
    }
    let used: std::collections::HashSet<String> = a.requests()[2..]
        .iter()
        .map(|r| r.header("authorization").unwrap().to_string())
        .collect();
    assert_eq!(used.len(), 2, "both keys still serve smaller requests: {used:?}");
}

/// Alpha (most of the weight) and beta behind `lm`; a circuit opens after 3 failures in a row,
/// for `open_s` seconds.
async fn circuit_pair(open_s: u32) -> (Mock, Mock, Gateway) {
    let server = format!("server: {{circuit_failure_threshold: 3, circuit_open_s: {open_s}}}\n");
    let a = Mock::start("alpha", &["m"]).await;
    let b = Mock::start("beta", &["m"]).await;
    let yaml = format!(
        "{server}providers:\n{}{}{}",
        provider_yaml("alpha", &a, ""),
        provider_yaml("beta", &b, ""),
        logical(&[("alpha", ", weight: 50"), ("beta", "")])
    );
    (a, b, Gateway::start(&yaml).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_provider_is_taken_out_and_let_back_after_a_probe() {
    // Open long enough that the 20 requests below finish inside it on a loaded machine.
    let (a, _b, gw) = circuit_pair(3).await;
    a.set_default(Reply::status(503));
    for _ in 0..20 {
        assert_eq!(gw.chat(chat_body("lm")).await.status(), 200);
    }
    let hits_when_open = a.hits();
    assert!(
        hits_when_open <= 4,
        "circuit opened after 3 failures: alpha saw {hits_when_open}"
    );
    // Healthy again; after the open period one probe goes through and closes the circuit.
    a.set_default(Reply::Ok);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let mut alpha = 0;
    for _ in 0..20 {
        if gw.chat(chat_body("lm")).await.headers()["x-apiproxy-provider"] == "alpha" {
            alpha += 1;
        }
    }
    assert!(
        alpha >= 10,
        "alpha back in rotation with most of the weight: {alpha}/20"
    );
    let v: Value = gw
        .client
        .get(gw.admin_url("/providers"))
        .bearer_auth(gw.admin().await.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Alpha's own upstream, not any (beta's circuit never opened).
    let alpha_m = v["providers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["id"] == "alpha")
        .flat_map(|p| p["upstreams"].as_array().cloned().unwrap_or_default())
        .find(|u| u["model"] == "m")
        .unwrap_or_default();
    assert_eq!(alpha_m["health"]["circuit"], "closed", "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_pingora_will_not_forward_is_the_client_s_fault() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = "server: {circuit_failure_threshold: 3, circuit_open_s: 30}\n";
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("{server}providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    let body = chat_body("m").to_string();
    for _ in 0..6 {
        // A Connection header that nominates a header a proxy must keep.
        let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\n\
             connection: close, x-forwarded-for\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        );
        sock.write_all(req.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), sock.read_to_string(&mut answer))
            .await
            .expect("an answer")
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("unforwardable_request"), "{answer}");
    }
    assert_eq!(a.hits(), 0, "nothing reached the upstream");
    // The upstream was not blamed: no circuit opened, it serves the next request.
    let r = gw.chat(chat_body("m")).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_probe_without_a_verdict_gives_its_slot_back() {
    let server = "server: {circuit_failure_threshold: 3, circuit_open_s: 3}\n";
    let a = Mock::start("alpha", &["m"]).await;
    let yaml = format!("{server}providers:\n{}", provider_yaml("alpha", &a, ""));
    let gw = Gateway::start(&yaml).await;
    a.set_default(Reply::status(503));
    for _ in 0..3 {
        assert_ne!(gw.chat(chat_body("m")).await.status(), 200);
    }
    assert_eq!(gw.chat(chat_body("m")).await.status(), 503, "circuit open");
    tokio::time::sleep(Duration::from_millis(3100)).await;
    // The probe's client leaves before the upstream answers: no verdict on the upstream.
    a.set_default(Reply::Delay(Duration::from_secs(2), Box::new(Reply::Ok)));
    let left = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .json(&chat_body("m"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(left.is_err(), "the client gave up");
    // Its request has ended on the gateway's side (the probe slot is given back as it ends).
    until("the abandoned request's end", Duration::from_secs(5), async || {
        metric(&gw.metrics().await, "apiproxy_active_requests", &[]) == 0.0
    })
    .await;
    // The next request probes at once instead of waiting out another 3 s.
    a.set_default(Reply::Ok);
    let r = gw.chat(chat_body("m")).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_stick_and_move_on_failover() {
    let mocks = [
        Mock::start("p0", &["m"]).await,
        Mock::start("p1", &["m"]).await,
        Mock::start("p2", &["m"]).await,
    ];
    let mut yaml = "providers:\n".to_string();
    for (i, m) in mocks.iter().enumerate() {
        yaml.push_str(&provider_yaml(&format!("p{i}"), m, ""));
    }
    yaml.push_str(&logical(&[("p0", ""), ("p1", ""), ("p2", "")]));
    let gw = Gateway::start(&yaml).await;
    let mut firsts = std::collections::HashSet::new();
    for s in 0..12 {
        let sid = format!("conversation-{s}");
        // Claude Code names its session in a header of its own.
        let name = if s % 2 == 0 {
            "x-session-id"
        } else {
            "x-claude-code-session-id"
        };
        let hdr = [(name, sid.as_str())];
        let first =
            gw.post("/v1/chat/completions", chat_body("lm"), &hdr).await.headers()["x-apiproxy-provider"].clone();
        for _ in 0..4 {
            let r = gw.post("/v1/chat/completions", chat_body("lm"), &hdr).await;
            assert_eq!(r.headers()["x-apiproxy-provider"], first, "session {sid} moved");
        }
        firsts.insert(first.to_str().unwrap().to_string());
    }
    assert!(firsts.len() >= 2, "sessions spread: {firsts:?}");

    // The sticky upstream fails: the session moves on, and stays on its new upstream.
    let sid = "conversation-0";
    let hdr = [("x-session-id", sid)];
    let first = gw.post("/v1/chat/completions", chat_body("lm"), &hdr).await.headers()["x-apiproxy-provider"]
        .to_str()
        .unwrap()
        .to_string();
    let idx: usize = first[1..].parse().unwrap();
    mocks[idx].set_default(Reply::Status {
        status: 429,
        retry_after: Some(1),
        body: "{}".into(),
    });
    let moved = gw.post("/v1/chat/completions", chat_body("lm"), &hdr).await.headers()["x-apiproxy-provider"]
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(moved, first);
    // The first upstream is back after its second: the session stays where its binding says,
    // not where the hash would place it.
    mocks[idx].set_default(Reply::Ok);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..3 {
        let r = gw.post("/v1/chat/completions", chat_body("lm"), &hdr).await;
        assert_eq!(r.headers()["x-apiproxy-provider"].to_str().unwrap(), moved);
    }
    let (_, v) = gw.admin_get(&format!("/routing/sessions/{sid}?model=lm")).await;
    assert_eq!(
        (&v["binding"], &v["upstream"]["provider"]),
        (&json!("stored"), &json!(moved)),
        "{v}"
    );
}

/// A stream the upstream broke mid-answer must not pin the conversation to that upstream.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_cut_mid_answer_binds_no_session() {
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    let token = gw.admin().await.token;
    let bound = |sid: &str| {
        let req = gw
            .client
            .get(gw.admin_url(&format!("/routing/sessions/{sid}")))
            .bearer_auth(&token);
        async move { req.send().await.unwrap().status() == 200 }
    };
    let stream = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    a.script([Reply::StreamCut { after: 2 }]);
    let cut = gw
        .post("/v1/chat/completions", stream.clone(), &[("x-session-id", "cut")])
        .await;
    assert!(!cut.text().await.unwrap().contains("[DONE]"));
    let whole = gw
        .post("/v1/chat/completions", stream, &[("x-session-id", "whole")])
        .await;
    assert!(whole.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    // Bindings are written in the background after the answer, the cut one's first.
    until("the whole stream's binding", Duration::from_secs(5), async || {
        bound("whole").await
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!bound("cut").await, "a cut stream bound its session");
}

/// A client that hangs up mid-stream (a user interrupting Claude Code) cut nothing the upstream
/// did: the upstream that was serving the session stays its binding, and the tokens it reported
/// so far (the prompt's, paid for all the same) are counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_the_client_leaves_still_binds_its_session() {
    let a = Mock::start_style("alpha", &["m"], Style::Anthropic).await;
    a.set_event_gap(Duration::from_millis(150));
    let gw = Gateway::start(&format!(
        "providers:\n{}",
        provider_yaml_styled("alpha", &a, ", models: [m]")
    ))
    .await;
    let token = gw.admin().await.token;
    let stream =
        json!({"model": "m", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let mut r = gw
        .post(
            "/v1/messages",
            stream,
            &[("x-session-id", "left"), ("anthropic-version", "2023-06-01")],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.chunk().await.unwrap().is_some(), "the first event");
    drop(r);
    until(
        "the binding of the stream its client left",
        Duration::from_secs(5),
        async || {
            let req = gw
                .client
                .get(gw.admin_url("/routing/sessions/left"))
                .bearer_auth(&token);
            req.send().await.unwrap().status() == 200
        },
    )
    .await;
    let text = gw.metrics().await;
    assert_eq!(
        metric(&text, "apiproxy_requests_total", &[("outcome", "client_closed")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "apiproxy_tokens_total", &[("kind", "input")]),
        common::mock::usage::PROMPT as f64,
        "{text}"
    );
}

/// Claude refuses thinking another Anthropic-style vendor (GLM, Kimi) signed in an earlier turn, and
/// would refuse every turn after it: the request is asked again at once without the conversation's
/// thinking, as the same attempt, and the client gets its answer; a failover to another Claude
/// upstream after that goes without it too.
#[tokio::test(flavor = "multi_thread")]
async fn thinking_signed_by_another_vendor_is_taken_out_when_claude_refuses_it() {
    let a = Mock::start_style("claude", &["m"], Style::Anthropic).await;
    let b = Mock::start_style("claude2", &["m"], Style::Anthropic).await;
    let gw = Gateway::start(&format!(
        "providers:\n{}{}{}",
        provider_yaml_styled("claude", &a, ", models: [m]"),
        provider_yaml_styled("claude2", &b, ", models: [m]"),
        "logical_models:\n  - id: lm\n    upstreams:\n      - {provider: claude, model: m}\n      - {provider: claude2, model: m, priority: 1}\n"
    ))
    .await;
    let refusal = r#"{"type":"error","error":{"type":"invalid_request_error","message":"messages.1.content.0: Invalid `signature` in `thinking` block"}}"#;
    let body = |model: &str| {
        json!({"model": model, "max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "greet", "signature": "glm-minted-signature"},
                {"type": "text", "text": "Hello"}]},
            {"role": "user", "content": "and now?"}]})
    };
    let headers = [("anthropic-version", "2023-06-01")];
    a.script([Reply::status_body(400, refusal)]);
    let r = gw.post("/v1/messages", body("claude/m"), &headers).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let sent = a.requests();
    assert_eq!(sent.len(), 2, "refused, then asked again");
    assert!(sent[0].json().to_string().contains("glm-minted-signature"));
    let again = sent[1].json();
    assert_eq!(
        again["messages"][1]["content"],
        json!([{"type": "text", "text": "Hello"}]),
        "{again}"
    );
    assert_eq!(again["thinking"]["type"], "enabled", "this turn may still think");
    let text = gw.metrics().await;
    let attempts = |outcome| metric(&text, "apiproxy_upstream_attempts_total", &[("outcome", outcome)]);
    assert_eq!((attempts("2xx"), attempts("4xx")), (1.0, 0.0), "{text}");

    // Refused, then asked again and rate-limited: the next Claude upstream gets it without too.
    a.script([
        Reply::status_body(400, refusal),
        Reply::Status {
            status: 429,
            retry_after: None,
            body: String::new(),
        },
    ]);
    let r = gw.post("/v1/messages", body("lm"), &headers).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(r.headers()["x-apiproxy-provider"], "claude2");
    let failed_over = b.last().unwrap().json();
    assert!(
        !failed_over.to_string().contains("glm-minted-signature"),
        "{failed_over}"
    );
}

/// An upstream that keeps its body open after the stream's end (`[DONE]` or `message_stop`, then
/// neither the last chunk nor a close): the client's answer is whole and properly ended at once, in
/// its own format (a translated one too), not after the upstream's read timeout; its tokens are
/// counted, the upstream is not blamed for a cut, and the lingering connection is not reused. A
/// well-behaved upstream's connection is.
#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_lingering_after_its_stream_s_end_breaks_nothing() {
    let a = Mock::start("alpha", &["m"]).await;
    let c = Mock::start_style("claude", &["c"], Style::Anthropic).await;
    // A read timeout far longer than the test may take: only the stream's end can end the answer.
    let timeouts = ", timeouts: {idle_ms: 20000, first_byte_ms: 20000}";
    let gw = Gateway::start(&format!(
        "providers:\n{}{}",
        provider_yaml("alpha", &a, timeouts),
        provider_yaml_styled("claude", &c, timeouts)
    ))
    .await;
    let chat = |model: &str| json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let anthropic = |model: &str| {
        json!({"model": model, "max_tokens": 50, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]})
    };
    let cases = [
        (&a, "/v1/chat/completions", chat("m"), "data: [DONE]\n\n"),
        // An Anthropic client of the OpenAI upstream: the ending in its own format.
        (
            &a,
            "/v1/messages",
            anthropic("m"),
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ),
        // An Anthropic upstream that lingers after its `message_stop`.
        (
            &c,
            "/v1/messages",
            anthropic("c"),
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ),
        (&c, "/v1/chat/completions", chat("c"), "data: [DONE]\n\n"),
    ];
    for (mock, path, body, ending) in cases {
        // A well-behaved stream first: its connection is kept for the next request.
        let r = gw
            .post(path, body.clone(), &[("anthropic-version", "2023-06-01")])
            .await;
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().ends_with(ending), "{path}");
        let before = mock.connections();
        mock.script([Reply::StreamStall { after: 1000 }]);
        let started = Instant::now();
        let r = gw
            .post(path, body.clone(), &[("anthropic-version", "2023-06-01")])
            .await;
        assert_eq!(r.status(), 200);
        let text = r.text().await.expect("a properly ended body");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path} waited {:?} for a lingering upstream",
            started.elapsed()
        );
        assert!(text.ends_with(ending), "{path}: {text}");
        assert!(!text.contains("error"), "{path}: {text}");
        assert_eq!(
            mock.connections(),
            before,
            "{path}: the well-behaved stream's connection was reused"
        );
        // The lingering connection is not: the next request opens a new one.
        let r = gw.post(path, body, &[("anthropic-version", "2023-06-01")]).await;
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().ends_with(ending), "{path}");
        assert_eq!(
            mock.connections(),
            before + 1,
            "{path}: the lingering connection was reused"
        );
    }
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(&metrics, "apiproxy_requests_total", &[("outcome", "stream_cut")]),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "apiproxy_requests_total", &[("outcome", "ok")]),
        12.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "apiproxy_tokens_total", &[("kind", "output")]) > 0.0,
        "the tokens of the answers: {metrics}"
    );
    for provider in ["alpha", "claude"] {
        assert_eq!(
            metric(&metrics, "apiproxy_upstream_error_rate", &[("provider", provider)]),
            0.0,
            "{metrics}"
        );
    }
}

/// An answer of two choices, passed through, whose stream ends (without `[DONE]`) once the first
/// choice has finished but not the second: the client's stream ends in an error event, not in a
/// clean-looking end that leaves the second choice cut short. Once both have finished, the end
/// without `[DONE]` lost nothing but usage, and is clean.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_of_two_choices_cut_after_the_first_finished_is_an_error() {
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    let chunk = chat_chunk;
    let body = json!({"model": "m", "n": 2, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    for (events, cut) in [
        (
            vec![
                chunk(0, r#"{"content":"a"}"#, "null"),
                chunk(1, r#"{"content":"b"}"#, "null"),
                chunk(0, "{}", "\"stop\""),
            ],
            true,
        ),
        (
            vec![
                chunk(0, r#"{"content":"a"}"#, "null"),
                chunk(1, r#"{"content":"b"}"#, "null"),
                chunk(0, "{}", "\"stop\""),
                chunk(1, "{}", "\"stop\""),
            ],
            false,
        ),
    ] {
        a.script([Reply::Sse(events)]);
        let r = gw.chat(body.clone()).await;
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        assert_eq!(text.contains("\"error\""), cut, "{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cut_or_stalled_streams_end_with_an_error_event() {
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!(
        "providers:\n{}",
        provider_yaml("alpha", &a, ", timeouts: {idle_ms: 400}")
    ))
    .await;
    let stream = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});

    for reply in [
        Reply::StreamCut { after: 2 },
        Reply::StreamAbort { after: 2 },
        Reply::StreamStall { after: 2 },
    ] {
        a.script([reply.clone()]);
        let started = Instant::now();
        let r = gw.chat(stream.clone()).await;
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        let data: Vec<String> = text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(String::from)
            .collect();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{reply:?} took {:?}",
            started.elapsed()
        );
        assert!(!data.iter().any(|d| d == "[DONE]"), "{reply:?}: {data:?}");
        let last: Value = serde_json::from_str(data.last().unwrap()).unwrap_or(Value::Null);
        assert_eq!(last["error"]["code"], "stream_interrupted", "{reply:?}: {data:?}");
        assert!(data.len() >= 3, "the events before the cut arrived: {data:?}");
    }
    // The Responses API gets its own error event (cut after its first delta: one cut after its
    // envelope alone is no answer, and fails over).
    a.script([Reply::StreamCut { after: 5 }]);
    let r = gw
        .post(
            "/v1/responses",
            json!({"model": "m", "stream": true, "input": "x"}),
            &[],
        )
        .await;
    let text = r.text().await.unwrap();
    // formats.md §4.7: a Responses stream fails with `response.failed`, never `response.completed`.
    assert!(text.contains("event: response.failed\ndata: {"), "{text}");
    assert!(text.contains("stream_interrupted"), "{text}");
    assert!(!text.contains("response.completed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_upstream_gets_less_traffic() {
    let a = Mock::start("fast", &["m"]).await;
    let b = Mock::start("slow", &["m"]).await;
    b.set_default(Reply::Delay(Duration::from_millis(150), Box::new(Reply::Ok)));
    let yaml = format!(
        "providers:\n{}{}{}",
        provider_yaml("fast", &a, ""),
        provider_yaml("slow", &b, ""),
        logical(&[("fast", ""), ("slow", "")])
    );
    let gw = Gateway::start(&yaml).await;
    for _ in 0..10 {
        gw.chat(chat_body("lm")).await;
    }
    a.clear();
    b.clear();
    for _ in 0..60 {
        gw.chat(chat_body("lm")).await;
    }
    assert!(a.hits() > 2 * b.hits(), "fast {} vs slow {}", a.hits(), b.hits());
}

/// Alpha's first two requests went with different keys (`header`), and the next four, all served
/// by alpha, with the second: the first key is out of rotation.
async fn the_first_key_left_rotation(a: &Mock, gw: &Gateway, header: &str) {
    let key = |r: &Recorded| r.header(header).unwrap_or_default().to_string();
    let reqs = a.requests();
    let (refused, good) = (key(&reqs[0]), key(&reqs[1]));
    assert_ne!(refused, good);
    for _ in 0..4 {
        assert_eq!(gw.chat(chat_body("lm")).await.headers()["x-apiproxy-provider"], "alpha");
    }
    assert!(
        a.requests()[2..].iter().all(|r| key(r) == good),
        "the refused key is not used again"
    );
}

/// An alpha of `style` and an OpenAI-style beta behind one logical model, alpha first.
async fn styled_pair(style: Style, alpha_keys: &[&str]) -> (Mock, Mock, Gateway) {
    let a = Mock::start_style("alpha", &["m"], style).await;
    let b = Mock::start("beta", &["m"]).await;
    let keys: Vec<String> = alpha_keys.iter().map(|k| format!("\"{k}\"")).collect();
    let yaml = format!(
        "providers:\n  - {{id: alpha, base_url: \"{}\", api_style: {}, api_keys: [{}]}}\n{}{}",
        a.url(),
        style.api_style(),
        keys.join(", "),
        provider_yaml("beta", &b, ""),
        logical(&[("alpha", ""), ("beta", ", priority: 1")])
    );
    (a, b, Gateway::start(&yaml).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_that_opens_with_an_error_fails_over() {
    // Anthropic answers 200 and then `event: error` overloaded_error as the very first event.
    let (a, b, gw) = styled_pair(Style::Anthropic, &["sk-alpha-secret-key"]).await;
    a.script([Reply::StreamError { after: 0 }]);
    let r = gw
        .chat(json!({"model": "lm", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
    assert_eq!(r.headers()["x-accel-buffering"], "no");
    let data = sse_data(r).await;
    assert!(data.iter().all(|d| !d.contains("error")), "{data:?}");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert_eq!((a.hits(), b.hits()), (1, 1));
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "apiproxy_upstream_attempts_total",
            &[("provider", "alpha"), ("outcome", "5xx")]
        ),
        1.0,
        "the attempt is counted as the overload it was, not as its 200: {metrics}"
    );

    // After the envelope alone (message_start, content_block_start) nothing of the answer has
    // come: it still fails over.
    a.script([Reply::StreamError { after: 2 }]);
    let r = gw
        .chat(json!({"model": "lm", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
    assert!(sse_data(r).await.iter().all(|d| !d.contains("error")));
    assert_eq!(b.hits(), 2);

    // The same error after the answer has begun cannot be failed over: the client sees it in its
    // own format, and beta is not asked.
    a.script([Reply::StreamError { after: 4 }]);
    let r = gw
        .chat(json!({"model": "lm", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(r.headers()["x-apiproxy-provider"], "alpha");
    let data = sse_data(r).await;
    assert!(data.last().is_some_and(|d| d.contains("\"error\"")), "{data:?}");
    assert_eq!(b.hits(), 2);

    // A stream that opens with content is released as it comes.
    a.script([Reply::Ok]);
    let r = gw
        .chat(json!({"model": "lm", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(r.headers()["x-apiproxy-provider"], "alpha");
    assert_eq!(sse_data(r).await.last().map(String::as_str), Some("[DONE]"));
}

/// A 200 stream whose first event says the model is not there passes to another upstream, as a
/// 404 would; one whose first event is the client's own mistake reaches the client and is no
/// success of the upstream's (it is counted as the 4xx it is).
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_opening_with_not_found_fails_over_and_with_the_client_s_mistake_does_not() {
    let (a, b, gw) = styled_pair(Style::OpenAiChat, &["sk-alpha-secret-key"]).await;
    let first = |kind: &str, code: &str| {
        Reply::Sse(vec![format!(
            "data: {{\"error\":{{\"message\":\"no\",\"type\":\"{kind}\",\"code\":\"{code}\"}}}}\n\n"
        )])
    };
    let stream = json!({"model": "lm", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    a.script([first("invalid_request_error", "model_not_found")]);
    let r = gw.chat(stream.clone()).await;
    assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
    assert_eq!(sse_data(r).await.last().map(String::as_str), Some("[DONE]"));
    assert_eq!((a.hits(), b.hits()), (1, 1));

    a.script([first("invalid_request_error", "context_length_exceeded")]);
    let r = gw.chat(stream).await;
    assert_eq!(r.headers()["x-apiproxy-provider"], "alpha");
    assert!(sse_data(r).await.iter().any(|d| d.contains("context_length_exceeded")));
    assert_eq!(b.hits(), 1, "the client's mistake is not asked of beta");
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "apiproxy_upstream_attempts_total",
            &[("provider", "alpha"), ("outcome", "4xx")]
        ),
        2.0,
        "{metrics}"
    );
    // The request that got the error as its stream went out under a 200; it is counted as the
    // upstream's answer of the client's mistake, not as an answer.
    assert_eq!(
        metric(
            &metrics,
            "apiproxy_requests_total",
            &[("outcome", "upstream_client_error"), ("status_class", "4xx")]
        ),
        1.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_same_format_stream_opening_with_a_rate_limit_error_fails_over() {
    let (a, b, gw) = pair("", "").await;
    // The error event arrives in two pieces, 30 ms apart: the answer stays held until it is whole.
    let event = format!(
        "data: {}\n\n",
        json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}})
    );
    let (head, tail) = event.split_at(20);
    a.set_event_gap(Duration::from_millis(30));
    a.script([Reply::Sse(vec![head.to_string(), tail.to_string()])]);
    let r = gw
        .chat(json!({"model": "lm", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
    let data = sse_data(r).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert_eq!((a.hits(), b.hits()), (1, 1));
    // Rate-limited: alpha rests (default cool-down) and the next request goes straight to beta.
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
    assert_eq!(a.hits(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn gemini_bad_key_and_billing_errors_take_the_key_out_of_rotation() {
    // Gemini says "bad key" with a 400: judged by its reason, like a 401.
    let (a, b, gw) = styled_pair(Style::Gemini, &["gm-first-secret", "gm-second-secret"]).await;
    a.script([Reply::gemini_bad_key()]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-apiproxy-provider"],
        "alpha",
        "the other key of alpha is tried"
    );
    the_first_key_left_rotation(&a, &gw, "x-goog-api-key").await;
    assert_eq!(b.hits(), 0);
    // A plain 400 (the client's mistake) is still not retried.
    a.script([Reply::status(400)]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 400);
    assert_eq!(b.hits(), 0);

    // Anthropic's 402 billing_error: not the client's mistake, fail over.
    let (a, b, gw) = styled_pair(Style::Anthropic, &["sk-alpha-secret-key"]).await;
    a.script([Reply::status_body(
        402,
        json!({"type": "error", "error": {"type": "billing_error", "message": "Your credit balance is too low"}})
            .to_string(),
    )]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
    assert_eq!((a.hits(), b.hits()), (1, 1));
    // Its only key is out of rotation: alpha is skipped without being asked.
    assert_eq!(gw.chat(chat_body("lm")).await.headers()["x-apiproxy-provider"], "beta");
    assert_eq!(a.hits(), 1);
    assert!(!gw.logs().contains("secret"), "no key in the logs");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_out_of_quota_key_leaves_rotation_instead_of_resting_the_provider() {
    // OpenAI says "out of credit" with a 429 whose code is insufficient_quota: the key is spent,
    // the provider is not rate-limited, so its other key is used at once.
    let (a, b, gw) = styled_pair(Style::OpenAiChat, &["sk-first-secret", "sk-second-secret"]).await;
    a.script([Reply::status_body(
        429,
        json!({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",
            "param": null, "code": "insufficient_quota"}})
        .to_string(),
    )]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-apiproxy-provider"], "alpha");
    the_first_key_left_rotation(&a, &gw, "authorization").await;
    assert_eq!(b.hits(), 0);
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(&metrics, "apiproxy_retries_total", &[("reason", "auth")]),
        1.0,
        "{metrics}"
    );

    // Anthropic says "spend limit reached" with a 429 rate_limit_error and a code in its details.
    let (a, b, gw) = styled_pair(Style::Anthropic, &["sk-first-secret", "sk-second-secret"]).await;
    a.script([Reply::status_body(
        429,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Spend limit reached",
            "details": {"error_code": "enforced_spend_limit_reached"}}})
        .to_string(),
    )]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-apiproxy-provider"], "alpha");
    the_first_key_left_rotation(&a, &gw, "x-api-key").await;
    assert_eq!(b.hits(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_that_breaks_before_its_first_event_fails_over() {
    // 200 and the stream's header, then the connection drops before any event: nothing has
    // reached the client, so the request is tried again (once on alpha, then on beta).
    let (a, b, gw) = pair("", "").await;
    a.set_default(Reply::StreamAbort { after: 0 });
    let r = gw
        .chat(json!({"model": "lm", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
    let data = sse_data(r).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert!(data.iter().all(|d| !d.contains("error")), "{data:?}");
    assert_eq!(
        (a.hits(), b.hits()),
        (2, 1),
        "a reset is retried once on the same upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attempt_after_one_that_broke_while_held_is_timed_from_its_own_header() {
    // Alpha's stream breaks while held (before its first event); the retry on alpha answers
    // after 300 ms, whole (a server that ignores `stream: true`), which is not held. Its time to first byte, and alpha's health latency, are that answer's own,
    // not measured from the broken attempt's hold.
    let (a, _b, gw) = pair("", "").await;
    a.script([
        Reply::StreamAbort { after: 0 },
        Reply::Delay(Duration::from_millis(300), Box::new(Reply::Whole(Box::new(Reply::Ok)))),
    ]);
    let r = gw
        .chat(json!({"model": "lm", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(r.status(), 200);
    let _ = r.text().await;
    assert_eq!(a.hits(), 2);
    let text = gw.metrics().await;
    let alpha = [("provider", "alpha")];
    let ttfb = metric(&text, "apiproxy_upstream_ttfb_seconds_sum", &alpha);
    assert!(ttfb >= 0.3, "time to first byte {ttfb} s");
    let ewma = metric(&text, "apiproxy_upstream_latency_ewma_seconds", &alpha);
    assert!(ewma >= 0.3, "health latency {ewma} s");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_of_keep_alives_is_held_at_most_five_seconds() {
    // Some OpenAI-compatible servers send comments for a long time before the first chunk: the
    // answer is held for its first event only so long, then goes on with what comes.
    let (a, _b, gw) = pair("", "").await;
    let mut events = vec![": keep-alive\n\n".to_string(); 8];
    let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]});
    events.push(format!("data: {chunk}\n\ndata: [DONE]\n\n"));
    a.set_event_gap(Duration::from_secs(1));
    a.script([Reply::Sse(events)]);
    let asked = Instant::now();
    let r = gw
        .chat(json!({"model": "lm", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    let header_after = asked.elapsed();
    assert_eq!(r.status(), 200);
    assert!(
        header_after < Duration::from_millis(7000),
        "the header waited {header_after:?}, for the content at ~8 s"
    );
    let data = sse_data(r).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert!(
        asked.elapsed() >= Duration::from_secs(7),
        "the content came at its own time"
    );
}

/// Each attempt may be a paid completion: `server.max_attempts` bounds them, whatever the route has.
#[tokio::test(flavor = "multi_thread")]
async fn attempts_are_bounded_by_max_attempts() {
    let mut mocks = Vec::new();
    let mut yaml = "server: {max_attempts: 3}\nproviders:\n".to_string();
    let mut upstreams = Vec::new();
    for i in 0..6 {
        let m = Mock::start(&format!("p{i}"), &["m"]).await;
        m.set_default(Reply::status(503));
        yaml.push_str(&provider_yaml(&format!("p{i}"), &m, ""));
        mocks.push(m);
        upstreams.push(format!("p{i}"));
    }
    let list: Vec<(&str, &str)> = upstreams.iter().map(|p| (p.as_str(), "")).collect();
    yaml.push_str(&logical(&list));
    let gw = Gateway::start(&yaml).await;
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["attempts"].as_array().map(Vec::len), Some(3), "{v}");
    assert_eq!(mocks.iter().map(Mock::hits).sum::<usize>(), 3);
}

/// A 5xx outside `retryable_status_codes` is the upstream's answer; a provider's own list decides.
#[tokio::test(flavor = "multi_thread")]
async fn retryable_status_codes_decide_what_fails_over() {
    let (a, b, gw) = pair("", "").await;
    a.script([Reply::status(501)]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 501);
    assert_eq!((a.hits(), b.hits()), (1, 0), "passed through, never retried");
    let (a, b, gw) = pair(", retryable_status_codes: [501]", "").await;
    a.script([Reply::status(501)]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
    assert_eq!((a.hits(), b.hits()), (1, 1));
}

/// An error page that is no JSON (a proxy's HTML 413 in front of a vLLM server) reaches a client
/// of the upstream's own format as a JSON error of that format, with its status.
#[tokio::test(flavor = "multi_thread")]
async fn an_html_error_page_reaches_a_same_format_client_as_its_json_error() {
    let (a, _b, gw) = pair("", "").await;
    let page = "<html><body><h1>413 Request Entity Too Large</h1></body></html>";
    a.script([Reply::Raw(format!(
        "HTTP/1.1 413 Request Entity Too Large\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\r\n{page}",
        page.len()
    ))]);
    let r = gw.chat(chat_body("alpha/m")).await;
    assert_eq!(r.status(), 413);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{:?}",
        r.headers()
    );
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");
}

/// A provider host with several addresses, one of which refuses connections (an IPv6 address
/// where the gateway has no IPv6 route, one server of several down): every request is served by
/// the address that answers, even with one attempt allowed, and the upstream is not blamed.
#[tokio::test(flavor = "multi_thread")]
async fn a_host_address_that_refuses_is_passed_over() {
    let a = Mock::start("alpha", &["m"]).await;
    let port = a.url().rsplit(':').next().unwrap().to_string();
    // Nothing listens on 127.0.0.2 (the mock is bound to 127.0.0.1 only).
    let yaml = format!(
        "server: {{max_attempts: 1, resolve: {{upstream.test: [127.0.0.2, 127.0.0.1]}}}}\nproviders:\n{}",
        provider_yaml_api(
            "alpha",
            &format!("http://upstream.test:{port}"),
            "openai",
            ", models: [m]"
        )
    );
    let gw = Gateway::start(&yaml).await;
    for i in 0..6 {
        let r = gw.chat(chat_body("m")).await;
        assert_eq!(r.status(), 200, "request {i}: {}", r.text().await.unwrap());
    }
    assert_eq!(a.requests().len(), 6);
    assert_eq!(
        a.last().unwrap().header("host"),
        Some(&*format!("upstream.test:{port}"))
    );
    let text = gw.metrics().await;
    let failed = metric(
        &text,
        "apiproxy_upstream_attempts_total",
        &[("provider", "alpha"), ("outcome", "transport_error")],
    );
    assert_eq!(failed, 0.0, "{text}");
    assert_eq!(
        metric(&text, "apiproxy_upstream_error_rate", &[("provider", "alpha")]),
        0.0,
        "{text}"
    );
}

/// A redo on the host's next address is the attempt that never reached the upstream: it spends
/// no second share of a key's `qps_limit` (a key with a budget of one request a second).
#[tokio::test(flavor = "multi_thread")]
async fn an_address_redo_spends_no_second_key_token() {
    let a = Mock::start("alpha", &["m"]).await;
    let port = a.url().rsplit(':').next().unwrap().to_string();
    let gw =
        Gateway::start("server: {max_attempts: 1, resolve: {upstream.test: [127.0.0.2, 127.0.0.1]}}\nproviders: []\n")
            .await;
    let r = gw
        .admin_req(reqwest::Method::POST, "/providers")
        .await
        .json(
            &json!({"id": "alpha", "base_url": format!("http://upstream.test:{port}"),
            "api_keys": [{"key": "sk-alpha-0123456789", "qps_limit": 1}], "models": [{"model": "m"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // The first request sent goes to the refusing address first. Until the provider is routed
    // (404) and its host resolved (a 502 that sent nothing and spent no key), nothing is sent.
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = gw.chat(chat_body("m")).await;
        if ![404, 502].contains(&r.status().as_u16()) || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(a.requests().len(), 1);
}

/// `server.resolve` holds for the gateway's own calls too: a provider on a pinned host name (in
/// no DNS) without a static model list is listed, so zero-config routes reach it.
#[tokio::test(flavor = "multi_thread")]
async fn a_pinned_host_is_listed_through_its_pinned_address() {
    let a = Mock::start("alpha", &["listed-m"]).await;
    let port = a.url().rsplit(':').next().unwrap().to_string();
    let yaml = format!(
        "server: {{resolve: {{models.pinned.test: [127.0.0.1]}}}}\nproviders:\n{}",
        provider_yaml_api("alpha", &format!("http://models.pinned.test:{port}"), "openai", "")
    );
    let gw = Gateway::start(&yaml).await;
    let r = gw.chat(chat_body("listed-m")).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert!(a.all_requests().iter().any(|r| r.method == "GET"), "listed");
}

/// The redos that are not attempts (a refused address of a host, at most four a request) do not
/// eat into `max_attempts`: sixteen upstreams, each first tried on an address that refuses, make
/// sixteen attempts (Pingora's retry loop stopped at sixteen turns, redos included: twelve).
#[tokio::test(flavor = "multi_thread")]
async fn address_redos_leave_every_attempt_of_the_budget() {
    let a = Mock::start("alpha", &["m"]).await;
    a.set_default(Reply::status(503));
    let port = a.url().rsplit(':').next().unwrap().to_string();
    let mut providers = String::new();
    let mut upstreams = Vec::new();
    for i in 0..16 {
        providers.push_str(&provider_yaml_api(
            &format!("p{i}"),
            &format!("http://upstream.test:{port}"),
            "openai",
            ", models: [m]",
        ));
        upstreams.push(format!("{{provider: p{i}, model: m}}"));
    }
    let yaml = format!(
        "server: {{max_attempts: 16, resolve: {{upstream.test: [127.0.0.2, 127.0.0.1]}}}}\nproviders:\n{providers}\
         logical_models:\n  - {{id: lm, upstreams: [{}]}}\n",
        upstreams.join(", ")
    );
    let gw = Gateway::start(&yaml).await;
    let r = gw.chat(chat_body("lm")).await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 502, "{v}");
    let attempts = v["error"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 16, "every attempt of the budget was made: {v}");
    assert_eq!(
        a.requests().len(),
        4,
        "the four redone on the address that answers: {v}"
    );
}

/// A body sent in tiny chunks (one byte each, mixed with a large one) arrives whole and in order at
/// every upstream attempt: the small pieces are copied together as they come.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_sent_in_tiny_chunks_is_sent_whole_to_each_attempt() {
    use tokio::io::AsyncWriteExt;
    let (a, b, gw) = failover_pair().await;
    a.script([Reply::status(503)]);
    let filler = "x".repeat(8192);
    let body =
        json!({"model": "lm", "messages": [{"role": "user", "content": format!("héllo {filler} wörld")}]}).to_string();
    let bytes = body.as_bytes();
    let (head, rest) = bytes.split_at(200);
    let (big, tail) = rest.split_at(6000);
    let mut wire = Vec::new();
    for piece in head.chunks(1).chain(std::iter::once(big)).chain(tail.chunks(1)) {
        wire.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        wire.extend_from_slice(piece);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    sock.write_all(&wire).await.unwrap();
    let answer = read_to_close(&mut sock, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    for mock in [&a, &b] {
        let sent = mock.last().unwrap().json();
        assert_eq!(sent["messages"][0]["content"], format!("héllo {filler} wörld"));
        assert_eq!(sent["model"], "m");
    }
}

/// Two native Responses upstreams of one logical model `lm`.
async fn responses_pair() -> (Mock, Mock, Gateway) {
    let a = Mock::start_style("alpha", &["m"], Style::Responses).await;
    let b = Mock::start_style("beta", &["m"], Style::Responses).await;
    let gw = Gateway::start(&format!(
        "providers:\n{}{}{}",
        provider_yaml_styled("alpha", &a, ""),
        provider_yaml_styled("beta", &b, ""),
        logical(&[("alpha", ""), ("beta", "")])
    ))
    .await;
    (a, b, gw)
}

/// The provider `key` (a session, or `response:{id}`) is bound to for `lm` once the gateway has
/// stored it as `provider` (any, when `None`): bindings are written after the answer.
async fn bound_for_lm(gw: &Gateway, token: &str, key: &str, provider: Option<&str>) -> Option<String> {
    for _ in 0..100 {
        let r = gw
            .client
            .get(gw.admin_url(&format!("/routing/sessions/{key}?model=lm")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        let stored = v["upstream"]["provider"].as_str().filter(|_| v["binding"] == "stored");
        if let Some(p) = stored.filter(|p| provider.is_none_or(|want| *p == want)) {
            return Some(p.to_string());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// A streamed Responses answer's id is bound to its upstream as soon as `response.created` passes,
/// not once the request is logged: a tool loop continues the moment it has `response.completed`,
/// maybe through another replica.
#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_response_is_bound_while_it_streams() {
    let (a, b, gw) = responses_pair().await;
    for m in [&a, &b] {
        m.set_event_gap(Duration::from_millis(400));
    }
    let token = gw.admin().await.token;
    let started = Instant::now();
    let mut r = gw
        .post(
            "/v1/responses",
            json!({"model": "lm", "input": "hi", "stream": true}),
            &[],
        )
        .await;
    assert_eq!(r.status(), 200);
    let maker = r.headers()["x-apiproxy-provider"].to_str().unwrap().to_string();
    let mut seen = String::new();
    let id = loop {
        let chunk = r.chunk().await.unwrap().expect("the stream's first events");
        seen.push_str(&String::from_utf8_lossy(&chunk));
        let created = seen
            .lines()
            .find_map(|l| l.strip_prefix("data: ").filter(|d| d.contains("response.created")));
        if let Some(data) = created {
            let v: Value = serde_json::from_str(data).unwrap();
            break v["response"]["id"].as_str().unwrap().to_string();
        }
    };
    let bound = bound_for_lm(&gw, &token, &format!("response:{id}"), None).await;
    assert_eq!(bound.as_deref(), Some(maker.as_str()));
    assert!(r.chunk().await.unwrap().is_some(), "the stream is still going");
    // The stream's last event comes about 5 s in: bound well before.
    assert!(started.elapsed() < Duration::from_secs(4), "bound while it streams");
    while r.chunk().await.unwrap().is_some() {}
}

/// A Responses conversation continued with `previous_response_id` (and no session) goes to the
/// upstream that made that response (it lives with that account: another answers 400), whole and
/// streamed, whatever the weights would pick, and only there: when that upstream answers 429, the
/// client hears the 429 (which it may retry), not the other upstream's 400.
#[tokio::test(flavor = "multi_thread")]
async fn a_response_is_continued_where_it_was_made() {
    let (a, b, gw) = responses_pair().await;
    // The id of an answer, whole or the `response.created` event of a stream.
    let answer_id = |text: &str| -> String {
        let json = text
            .lines()
            .find_map(|l| l.strip_prefix("data: ").filter(|d| d.contains("response.created")))
            .unwrap_or(text);
        let v: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {text}"));
        v.pointer("/response/id")
            .or(v.get("id"))
            .and_then(Value::as_str)
            .unwrap()
            .to_string()
    };
    let token = gw.admin().await.token;
    let mut last = None;
    for conversation in 0..8 {
        let stream = conversation % 2 == 1;
        let mut body = json!({"model": "lm", "input": "hi", "stream": stream});
        let mut made_by: Option<String> = None;
        for turn in 0..3 {
            let r = gw.post("/v1/responses", body.clone(), &[]).await;
            let provider = r.headers()["x-apiproxy-provider"].to_str().unwrap().to_string();
            let status = r.status();
            let text = r.text().await.unwrap();
            assert_eq!(status, 200, "conversation {conversation}, turn {turn}: {text}");
            let maker = made_by.get_or_insert_with(|| provider.clone());
            assert_eq!(&provider, maker, "conversation {conversation}, turn {turn}");
            let id = answer_id(&text);
            let key = format!("response:{id}");
            assert_eq!(
                bound_for_lm(&gw, &token, &key, None).await.as_deref(),
                Some(maker.as_str())
            );
            body = json!({"model": "lm", "input": "more", "stream": stream, "previous_response_id": id});
        }
        last = made_by.map(|maker| (maker, body));
    }
    // A response the gateway has no binding for and no upstream made: each is asked, and the
    // last one's 400 reaches the client (the gateway does not refuse it itself).
    let unknown = json!({"model": "lm", "input": "more", "previous_response_id": "resp_from_elsewhere"});
    let r = gw.post("/v1/responses", unknown, &[]).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "previous_response_not_found"
    );
    // An answer asked with `store: false` binds nothing (nothing can continue from it); a stored
    // one after it does, and is waited for: the unstored one's would have been written first.
    let unstored = gw
        .post(
            "/v1/responses",
            json!({"model": "lm", "input": "hi", "store": false}),
            &[],
        )
        .await;
    let unstored_id = answer_id(&unstored.text().await.unwrap());
    let stored = gw
        .post("/v1/responses", json!({"model": "lm", "input": "hi"}), &[])
        .await;
    let stored_id = answer_id(&stored.text().await.unwrap());
    let binding_of = |id: &str| {
        let (gw, token, path) = (&gw, token.clone(), format!("/routing/sessions/response:{id}"));
        async move {
            let r = gw
                .client
                .get(gw.admin_url(&path))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            r.status()
        }
    };
    let mut seen = reqwest::StatusCode::NOT_FOUND;
    for _ in 0..100 {
        seen = binding_of(&stored_id).await;
        if seen == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, 200, "the stored answer was bound");
    assert_eq!(binding_of(&unstored_id).await, 404, "a store: false answer was bound");
    let (maker, body) = last.unwrap();
    let (mock, other) = if maker == "alpha" { (&a, &b) } else { (&b, &a) };
    the_maker_s_429_reaches_the_client(&gw, mock, other, body, &[]).await;
}

/// A continuation of a response the gateway holds no binding for (made before it ran, or its
/// binding expired or was lost with the state) is asked of the route's Responses upstreams in turn
/// until the one that made it answers, across tiers, whole or streamed; from then on it goes there
/// straight. None is marked unhealthy for the search. When none made it, the last refusal is the
/// client's, also when the route's other upstreams speak another API or the attempt budget ends
/// the search.
#[tokio::test(flavor = "multi_thread")]
async fn a_response_without_a_binding_is_found_where_it_was_made() {
    let a = Mock::start_style("alpha", &["m"], Style::Responses).await;
    let b = Mock::start_style("beta", &["m"], Style::Responses).await;
    let c = Mock::start_style("gamma", &["m"], Style::Anthropic).await;
    let d = Mock::start_style("delta", &["m"], Style::Responses).await;
    let providers = [("alpha", &a), ("beta", &b), ("gamma", &c), ("delta", &d)]
        .iter()
        .map(|(id, m)| provider_yaml_styled(id, m, ""))
        .collect::<String>();
    let gw = Gateway::start(&format!(
        "providers:\n{providers}{}",
        logical(&[("alpha", ""), ("beta", ", priority: 1"), ("gamma", ", priority: 2")])
    ))
    .await;
    let token = gw.admin().await.token;
    let hits = || (a.hits(), b.hits());
    let continuation =
        |id: &str, stream: bool| json!({"model": "lm", "input": "more", "stream": stream, "previous_response_id": id});
    // Six searches: more than the failures that would open alpha's circuit, were it blamed.
    for turn in 0..6 {
        let stream = turn % 2 == 1;
        let id = b.state.issue_response_id();
        for (asked, asked_alpha) in [("first", 1), ("again", 0)] {
            let before = hits();
            let r = gw.post("/v1/responses", continuation(&id, stream), &[]).await;
            assert_eq!(r.headers()["x-apiproxy-provider"], "beta", "{asked}, stream {stream}");
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
            assert_eq!(
                (a.hits() - before.0, b.hits() - before.1),
                (asked_alpha, 1),
                "{asked}, stream {stream}"
            );
            let key = format!("response:{id}");
            let bound = bound_for_lm(&gw, &token, &key, None).await;
            assert_eq!(bound.as_deref(), Some("beta"), "{asked}, stream {stream}");
        }
    }
    // The searches left alpha healthy: a fresh request still goes to the first tier.
    let r = gw
        .post("/v1/responses", json!({"model": "lm", "input": "hi"}), &[])
        .await;
    assert_eq!(r.headers()["x-apiproxy-provider"], "alpha");
    // A response none made: both Responses upstreams are asked, the Anthropic one cannot take a
    // continuation, and the last refusal reaches the client as it was said.
    let none_made = |r: reqwest::Response| async move {
        assert_eq!(r.status(), 400);
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "previous_response_not_found"
        );
    };
    let before = hits();
    none_made(
        gw.post("/v1/responses", continuation("resp_from_elsewhere", false), &[])
            .await,
    )
    .await;
    assert_eq!((a.hits() - before.0, b.hits() - before.1, c.hits()), (1, 1, 0));

    // With an attempt budget of two, a third Responses upstream is not asked.
    let budget = Gateway::start(&format!(
        "server: {{max_attempts: 2}}\nproviders:\n{providers}{}",
        logical(&[("alpha", ""), ("beta", ", priority: 1"), ("delta", ", priority: 2")])
    ))
    .await;
    let before = hits();
    none_made(
        budget
            .post("/v1/responses", continuation("resp_from_elsewhere", false), &[])
            .await,
    )
    .await;
    assert_eq!((a.hits() - before.0, b.hits() - before.1, d.hits()), (1, 1, 0));
}

/// A continuation whose maker answers 429: the client gets the 429 to retry, and the upstream
/// that cannot read the response gets nothing.
async fn the_maker_s_429_reaches_the_client(
    gw: &Gateway,
    maker: &Mock,
    other: &Mock,
    continued: Value,
    headers: &[(&str, &str)],
) {
    maker.script([Reply::status_retry_after(429, 5)]);
    let before = other.hits();
    let r = gw.post("/v1/responses", continued, headers).await;
    assert_eq!(r.status(), 429, "{}", r.text().await.unwrap_or_default());
    assert_eq!(
        other.hits(),
        before,
        "the continuation went to the upstream that did not make it"
    );
}

/// A request of a session that continues a response goes where the response was made, though a
/// failover has since moved the session: no other upstream can read the response (it would
/// answer 400 `previous_response_not_found`), and that upstream's 429 reaches the client as one.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_s_continuation_goes_where_its_response_was_made() {
    let (a, b, gw) = responses_pair().await;
    let token = gw.admin().await.token;
    let session = [("x-session-id", "moved-on")];
    let r = gw
        .post("/v1/responses", json!({"model": "lm", "input": "hi"}), &session)
        .await;
    assert_eq!(r.status(), 200);
    let maker = r.headers()["x-apiproxy-provider"].to_str().unwrap().to_string();
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let response = format!("response:{id}");
    assert_eq!(bound_for_lm(&gw, &token, &response, None).await, Some(maker.clone()));
    assert_eq!(bound_for_lm(&gw, &token, "moved-on", None).await, Some(maker.clone()));
    let (made_by, other) = if maker == "alpha" { (&a, &b) } else { (&b, &a) };
    let other_name = if maker == "alpha" { "beta" } else { "alpha" };

    // The maker refuses a fresh turn of the session: it fails over, and the session moves.
    made_by.script([Reply::status(503)]);
    let r = gw
        .post("/v1/responses", json!({"model": "lm", "input": "new topic"}), &session)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-apiproxy-provider"], other_name);
    assert!(
        bound_for_lm(&gw, &token, "moved-on", Some(other_name)).await.is_some(),
        "the failover moved the session"
    );

    // Continuing the first response goes back to its maker.
    let continued = json!({"model": "lm", "input": "more", "previous_response_id": id});
    let r = gw.post("/v1/responses", continued.clone(), &session).await;
    let provider = r.headers()["x-apiproxy-provider"].to_str().unwrap().to_string();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    assert_eq!(provider, maker);
    // And its maker's 429 is the client's to retry, not a failover to an upstream that cannot
    // read the response.
    the_maker_s_429_reaches_the_client(&gw, made_by, other, continued, &session).await;
}

/// A compaction served after a failover moves its session there, as an answer does: the
/// conversation goes on from a compacted state only the upstream that made it can read.
#[tokio::test(flavor = "multi_thread")]
async fn a_compaction_moves_its_session_as_an_answer_does() {
    let (a, b, gw) = responses_pair().await;
    let token = gw.admin().await.token;
    let session = [("x-session-id", "compacting")];
    let turn = json!({"model": "lm", "input": "hi"});
    let r = gw.post("/v1/responses", turn.clone(), &session).await;
    assert_eq!(r.status(), 200);
    let first = r.headers()["x-apiproxy-provider"].to_str().unwrap().to_string();
    assert!(bound_for_lm(&gw, &token, "compacting", Some(&first)).await.is_some());
    let (bound, other) = if first == "alpha" { (&a, "beta") } else { (&b, "alpha") };
    bound.script([Reply::status(503)]);
    let compact = json!({"model": "lm", "input": [{"role": "user", "content": "hi"}]});
    let r = gw.post("/v1/responses/compact", compact, &session).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-apiproxy-provider"], other);
    assert!(
        bound_for_lm(&gw, &token, "compacting", Some(other)).await.is_some(),
        "the compaction did not move the session"
    );
    let r = gw.post("/v1/responses", turn, &session).await;
    assert_eq!(r.headers()["x-apiproxy-provider"], other);
}

/// An upstream's error may echo the key it was called with (Google names a suspended key in full
/// under its 403): the client gets the error without it, in the upstream's own shape when it
/// speaks that format, and re-rendered in its own otherwise.
#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_error_that_echoes_its_key_reaches_the_client_without_it() {
    let a = Mock::start("alpha", &["m"]).await;
    // A credential set as a header (Azure's `api-key`) is taken out too; an `api-version` is not.
    let header_key = "azure0123456789abcdef0123456789ab";
    let gw = Gateway::start(&format!(
        "providers:\n{}{}",
        provider_yaml(
            "alpha",
            &a,
            &format!(", headers: {{api-key: {header_key}, x-api-version: 2024-10-21}}")
        ),
        logical(&[("alpha", "")])
    ))
    .await;
    let key = provider_key("alpha");
    let refusal =
        json!({"error": {"message": format!("Permission denied: Consumer 'api_key:{key}' has been suspended."),
        "type": "permission_denied", "code": "suspended", "param": format!("{header_key} at 2024-10-21"),
        "details": [{"metadata": {"consumer": key}}]}})
        .to_string();
    for status in [403, 400] {
        a.script([Reply::Status {
            status,
            retry_after: None,
            body: refusal.clone(),
        }]);
        let r = gw.chat(chat_body("lm")).await;
        assert_eq!(r.status().as_u16(), status);
        let text = r.text().await.unwrap();
        assert!(!text.contains(&key), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["code"], "suspended", "the upstream's own error: {text}");
        assert_eq!(v["error"]["details"][0]["metadata"]["consumer"], "[REDACTED]");
        assert_eq!(v["error"]["param"], "[REDACTED] at 2024-10-21");
    }
    // One too large to hold whole (a 422 echoing a large request) is said in the gateway's
    // words, still JSON.
    let echoed = json!({"detail": [{"msg": "Field required", "input": "A".repeat(9 << 20)}]}).to_string();
    a.script([Reply::Status {
        status: 422,
        retry_after: None,
        body: echoed,
    }]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.expect("a JSON error");
    assert!(v["error"]["message"].is_string(), "{v}");
    // Nor in an error event inside a stream, passed through or translated.
    let events = vec![
        format!(
            "data: {}\n\n",
            json!({"id": "c1", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": null}]})
        ),
        format!(
            "data: {}\n\n",
            json!({"error": {"message": format!("key {key} suspended"), "type": "server_error"}})
        ),
    ];
    let stream_body = json!({"model": "lm", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    a.script([Reply::Sse(events.clone())]);
    let text = gw.chat(stream_body).await.text().await.unwrap();
    assert!(
        text.contains("Hi") && text.contains("suspended") && !text.contains(&key),
        "{text}"
    );
    a.script([Reply::Sse(events)]);
    let claude =
        json!({"model": "lm", "max_tokens": 10, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let text = gw.post("/v1/messages", claude, &[]).await.text().await.unwrap();
    assert!(text.contains("suspended") && !text.contains(&key), "{text}");
    // Re-rendered for an Anthropic client: the message without the key.
    a.script([Reply::Status {
        status: 403,
        retry_after: None,
        body: refusal,
    }]);
    let r = gw
        .post(
            "/v1/messages",
            json!({"model": "lm", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
            &[],
        )
        .await;
    assert_eq!(r.status(), 403);
    let text = r.text().await.unwrap();
    assert!(!text.contains(&key) && text.contains("[REDACTED]"), "{text}");
}

/// A client's mistake answered at once (a 400) says nothing of how fast the upstream generates:
/// it does not pull the latency its share is weighted by.
#[tokio::test(flavor = "multi_thread")]
async fn a_quick_client_error_is_no_latency_sample() {
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ", models: [m]"))).await;
    a.script([
        Reply::Delay(Duration::from_millis(400), Box::new(Reply::Ok)),
        Reply::status(400),
        Reply::status(400),
    ]);
    assert_eq!(gw.chat(chat_body("m")).await.status(), 200);
    for _ in 0..2 {
        assert_eq!(gw.chat(chat_body("m")).await.status(), 400);
    }
    let text = gw.metrics().await;
    let ewma = metric(
        &text,
        "apiproxy_upstream_latency_ewma_seconds",
        &[("provider", "alpha"), ("model", "m")],
    );
    assert!(ewma >= 0.4, "the 400s moved the latency: {ewma}");
}

/// A probe whose stream opens fine and then breaks is the failed probe it is: no other request
/// reaches the upstream while it streams, and the wait before the next probe doubles.
#[tokio::test(flavor = "multi_thread")]
async fn a_probe_whose_stream_breaks_keeps_the_circuit_open() {
    let (a, _b, gw) = circuit_pair(2).await;
    a.set_default(Reply::status(503));
    for _ in 0..10 {
        assert_eq!(gw.chat(chat_body("lm")).await.status(), 200);
    }
    // Alpha answers again, but every stream of it breaks after its third event, slowly.
    a.set_default(Reply::StreamCut { after: 3 });
    a.set_event_gap(Duration::from_millis(300));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let hits = a.hits();
    let probe = {
        let gw_url = gw.url("/v1/chat/completions");
        let client = gw.client.clone();
        tokio::spawn(async move {
            let r = client
                .post(gw_url)
                .bearer_auth(CLIENT_KEY)
                .json(&json!({"model": "lm", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap();
            (
                r.headers()["x-apiproxy-provider"].to_str().unwrap().to_string(),
                r.text().await.unwrap(),
            )
        })
    };
    // While the probe streams, the others go to beta.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..5 {
        let r = gw.chat(chat_body("lm")).await;
        assert_eq!(
            r.headers()["x-apiproxy-provider"],
            "beta",
            "request {i} during the probe"
        );
    }
    let (provider, text) = probe.await.unwrap();
    assert_eq!(provider, "alpha", "the probe: {text}");
    assert!(text.contains("error"), "the probe's stream broke: {text}");
    assert_eq!(a.hits(), hits + 1, "only the probe reached alpha");
    // Past the first wait (2 s), within the doubled one (4 s): still out.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for _ in 0..5 {
        assert_eq!(gw.chat(chat_body("lm")).await.headers()["x-apiproxy-provider"], "beta");
    }
    assert_eq!(a.hits(), hits + 1);
}

/// A session's binding is its client key's: another key sending the same session id is placed by
/// the hash as a new session would be, and its answers do not move the first key's binding.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_s_binding_is_its_own_client_key_s() {
    const OTHER_KEY: &str = "other-client-key-0123456789";
    let (a, b) = (Mock::start("alpha", &["m"]).await, Mock::start("beta", &["m"]).await);
    // The second client continues the `clients` list the harness starts.
    let gw = Gateway::start(&format!(
        "  - {{name: other, key: \"{OTHER_KEY}\"}}\nproviders:\n{}{}{}",
        provider_yaml("alpha", &a, ""),
        provider_yaml("beta", &b, ""),
        logical(&[("alpha", ""), ("beta", "")])
    ))
    .await;
    let admin_get = |path: &'static str| gw.admin_get(path);
    let hdr = [("x-session-id", "shared-sid")];
    let (_, v) = admin_get("/routing/sessions/shared-sid?model=lm").await;
    let hashed = v["upstream"]["provider"].as_str().unwrap().to_string();
    let (hashed_mock, other) = if hashed == "alpha" { (&a, "beta") } else { (&b, "alpha") };
    // The tester's session fails over once: its binding moves to the other upstream.
    hashed_mock.script([Reply::Status {
        status: 503,
        retry_after: None,
        body: String::new(),
    }]);
    let r = gw.post("/v1/chat/completions", chat_body("lm"), &hdr).await;
    assert_eq!(r.headers()["x-apiproxy-provider"], other);
    until("the tester's binding", Duration::from_secs(5), async || {
        let (_, v) = admin_get("/routing/sessions/shared-sid?model=lm").await;
        v["binding"] == "stored" && v["upstream"]["provider"] == other
    })
    .await;
    // Another key naming the same session is placed by the hash, not by the tester's binding.
    let as_other = || {
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(OTHER_KEY)
            .header("x-session-id", "shared-sid")
            .json(&chat_body("lm"))
            .send()
    };
    let r = as_other().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-apiproxy-provider"].to_str().unwrap(), hashed);
    until("both clients' bindings", Duration::from_secs(5), async || {
        admin_get("/routing/sessions/shared-sid").await.1["bindings"]
            .as_array()
            .is_some_and(|b| b.len() == 2)
    })
    .await;
    // Its binding did not move the tester's session.
    for _ in 0..2 {
        let r = gw.post("/v1/chat/completions", chat_body("lm"), &hdr).await;
        assert_eq!(r.headers()["x-apiproxy-provider"], other);
        let r = as_other().await.unwrap();
        assert_eq!(r.headers()["x-apiproxy-provider"].to_str().unwrap(), hashed);
    }
    // The admin API shows each client's binding, and asks which one is meant.
    let (_, v) = admin_get("/routing/sessions/shared-sid").await;
    let mut held: Vec<(String, String)> = v["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["client"].as_str().unwrap().into(),
                b["upstream"]["provider"].as_str().unwrap().into(),
            )
        })
        .collect();
    held.sort();
    assert_eq!(
        held,
        [("other".into(), hashed.clone()), ("tester".into(), other.to_string())]
    );
    let (s, v) = admin_get("/routing/sessions/shared-sid?model=lm").await;
    assert_eq!((s, &v["error"]["field"]), (400, &json!("client")), "{v}");
    let (s, v) = admin_get("/routing/sessions/shared-sid?model=lm&client=tester").await;
    assert_eq!(
        (s, &v["binding"], &v["upstream"]["provider"]),
        (200, &json!("stored"), &json!(other))
    );
}

/// A session's binding lives `SESSION_TTL` after its last request: then the session is placed by
/// the hash again.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_s_binding_ends_after_session_ttl() {
    let (a, b) = (Mock::start("alpha", &["m"]).await, Mock::start("beta", &["m"]).await);
    let gw = Gateway::start_with_env(
        &format!(
            "providers:\n{}{}{}",
            provider_yaml("alpha", &a, ""),
            provider_yaml("beta", &b, ""),
            logical(&[("alpha", ""), ("beta", "")])
        ),
        &[("SESSION_TTL", "1")],
    )
    .await;
    let status = async || gw.admin_get("/routing/sessions/brief").await.0;
    let r = gw
        .post("/v1/chat/completions", chat_body("lm"), &[("x-session-id", "brief")])
        .await;
    assert_eq!(r.status(), 200);
    until("the binding", Duration::from_secs(5), async || status().await == 200).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(status().await, 404, "the binding outlived SESSION_TTL");
}

/// A gateway whose one OpenAI-style upstream (circuit threshold `threshold`) has answered two
/// streams that broke off with `error` mid-answer and then closed with `[DONE]`, as vLLM and
/// OpenRouter do; each time the client saw the error (its message contains `says`).
async fn two_streams_that_err(threshold: u32, error: Value, says: &str) -> (Mock, Gateway) {
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!(
        "server: {{circuit_failure_threshold: {threshold}, circuit_open_s: 60}}\nproviders:\n{}",
        provider_yaml("alpha", &a, "")
    ))
    .await;
    let chunk = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": null}]});
    for _ in 0..2 {
        a.script([Reply::Sse(vec![
            format!("data: {chunk}\n\n"),
            format!("data: {error}\n\n"),
            "data: [DONE]\n\n".to_string(),
        ])]);
        let r = gw
            .post(
                "/v1/chat/completions",
                json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
                &[("x-session-id", "errs")],
            )
            .await;
        assert_eq!(r.status(), 200);
        let data = sse_data(r).await;
        assert!(data.iter().any(|d| d.contains(says)), "{data:?}");
    }
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(&metrics, "apiproxy_requests_total", &[("outcome", "stream_cut")]),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "apiproxy_requests_total", &[("outcome", "ok")]),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        gw.admin_get("/routing/sessions/errs").await.0,
        404,
        "an errored answer bound the session"
    );
    (a, gw)
}

/// A stream that breaks off with an upstream's error chunk and then closes with `[DONE]` is no
/// whole answer: counted as cut and against its upstream's health, and it binds no session. Two in
/// a row open the circuit (threshold 2).
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_that_errs_before_its_done_is_no_success() {
    let error =
        json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error"}});
    let (a, gw) = two_streams_that_err(2, error, "server had an error").await;
    let metrics = gw.metrics().await;
    let broken = [("provider", "alpha"), ("outcome", "transport_error")];
    assert_eq!(
        metric(&metrics, "apiproxy_upstream_attempts_total", &broken),
        2.0,
        "{metrics}"
    );
    // Two failures in a row: alpha's circuit is open, and nothing more is sent to it.
    let r = gw.chat(chat_body("m")).await;
    assert_eq!(r.status(), 503, "{:?}", r.text().await);
    assert_eq!(a.hits(), 2);
}

/// An error event mid-stream that is the request's own (an invalid request, a prompt too long for
/// the context) breaks the answer but says nothing of the upstream: its circuit stays closed.
#[tokio::test(flavor = "multi_thread")]
async fn a_mid_stream_error_of_the_request_s_own_spares_the_upstream() {
    let error = json!({"error": {"message": "This model's maximum context length is 8192 tokens.",
        "type": "invalid_request_error", "code": "context_length_exceeded"}});
    let (a, gw) = two_streams_that_err(1, error, "maximum context length").await;
    // Threshold 1: one failure would have opened alpha's circuit.
    assert_eq!(gw.chat(chat_body("m")).await.status(), 200);
    assert_eq!(a.hits(), 3);
}

/// A Gemini stream whose finish chunk ends without its closing blank line (servers that end the
/// body right after the last `data:` line) is whole: the client gets a clean end, and the upstream
/// is not blamed for a cut (two such "cuts" in a row had opened its circuit here).
#[tokio::test(flavor = "multi_thread")]
async fn a_last_event_without_its_blank_line_is_no_cut() {
    let a = Mock::start_style("alpha", &["m"], Style::Gemini).await;
    let gw = Gateway::start(&format!(
        "server: {{circuit_failure_threshold: 2, circuit_open_s: 60}}\nproviders:\n  - {{id: alpha, base_url: \"{}\", api_style: gemini, api_keys: [\"gm-key\"]}}\n",
        a.url()
    ))
    .await;
    let text = |t: &str| json!({"candidates": [{"content": {"role": "model", "parts": [{"text": t}]}, "index": 0}]});
    let last = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "!"}]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5}});
    for _ in 0..4 {
        a.script([Reply::Sse(vec![
            format!("data: {}\r\n\r\n", text("Hi")),
            format!("data: {last}"),
        ])]);
        let r = gw
            .chat(json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
            .await;
        assert_eq!(r.status(), 200);
        let data = sse_data(r).await;
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
        assert!(!data.iter().any(|d| d.contains("\"error\"")), "{data:?}");
    }
    assert_eq!(a.hits(), 4, "alpha stayed in rotation");
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(&metrics, "apiproxy_requests_total", &[("outcome", "stream_cut")]),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "apiproxy_requests_total", &[("outcome", "ok")]),
        4.0,
        "{metrics}"
    );
}

/// An Anthropic stream that opens its envelope (`message_start`, a ping, a block's start) and
/// then ends its body cleanly has said nothing: nothing of it reached the client, so the next
/// upstream answers. An empty answer that ends properly is still given as it is.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_cut_after_its_envelope_fails_over() {
    let (a, b, gw) = styled_pair(Style::Anthropic, &["sk-alpha-secret-key"]).await;
    let stream = json!({"model": "lm", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    a.script([Reply::StreamCut { after: 3 }]);
    let r = gw.chat(stream.clone()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
    let data = sse_data(r).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    assert!(!data.iter().any(|d| d.contains("\"error\"")), "{data:?}");
    assert_eq!((a.hits(), b.hits()), (1, 1));

    // Envelope and a proper end, nothing said: an empty answer from alpha, not a failover.
    let start = json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
        "model": "m", "content": [], "stop_reason": null, "usage": {"input_tokens": 3, "output_tokens": 1}}});
    let delta = json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
        "usage": {"output_tokens": 0}});
    a.script([Reply::Sse(vec![
        format!("event: message_start\ndata: {start}\n\n"),
        format!("event: message_delta\ndata: {delta}\n\n"),
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".to_string(),
    ])]);
    let r = gw.chat(stream).await;
    assert_eq!(r.headers()["x-apiproxy-provider"], "alpha");
    let data = sse_data(r).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    assert!(!data.iter().any(|d| d.contains("\"error\"")), "{data:?}");
    assert_eq!((a.hits(), b.hits()), (2, 1));
}

/// A 404 (or a 403 for this request only) passes to the route's next candidate only when that one
/// would be asked: beta, whose only key left rotation after a 401, would be passed by unasked, so
/// alpha's own answer reaches the client instead of a 502 that every SDK retries.
#[tokio::test(flavor = "multi_thread")]
async fn a_404_reaches_the_client_when_the_other_candidate_has_no_key_left() {
    let (a, b, gw) = pair("", "").await;
    a.script([Reply::status(503)]);
    b.script([Reply::status(401)]);
    assert_eq!(gw.chat(chat_body("lm")).await.status(), 502);
    let missing = json!({"error": {"message": "The model `m` does not exist", "type": "invalid_request_error",
        "param": null, "code": "model_not_found"}})
    .to_string();
    a.script([Reply::status_body(404, missing.clone())]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap(), missing);
    let forbidden = json!({"error": {"message": "not allowed in your region", "type": "invalid_request_error",
        "param": null, "code": "unsupported_country_region_territory"}})
    .to_string();
    a.script([Reply::status_body(403, forbidden.clone())]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.text().await.unwrap(), forbidden);
    assert_eq!(b.hits(), 1, "beta was asked only the first time");

    // Nor when the other candidate cannot be sent this request: legacy `functions` do not
    // translate for an Anthropic-style beta.
    let a = Mock::start("alpha", &["m"]).await;
    let b = Mock::start_style("beta", &["m"], Style::Anthropic).await;
    let gw = Gateway::start(&format!(
        "providers:\n{}{}{}",
        provider_yaml("alpha", &a, ""),
        provider_yaml_styled("beta", &b, ""),
        logical(&[("alpha", ""), ("beta", ", priority: 1")])
    ))
    .await;
    a.script([Reply::status_body(404, missing.clone())]);
    let mut legacy = chat_body("lm");
    legacy["functions"] = json!([{"name": "get_weather", "parameters": {"type": "object"}}]);
    let r = gw.chat(legacy).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap(), missing);
    assert_eq!(b.hits(), 0);
}

/// The one more try on the same upstream after a 500 is not made when that failure opened the
/// upstream's circuit: the next candidate answers, and alpha gets no second call.
#[tokio::test(flavor = "multi_thread")]
async fn no_second_try_on_an_upstream_whose_circuit_just_opened() {
    let (a, b, gw) = pair("", "server: {circuit_failure_threshold: 1, circuit_open_s: 60}\n").await;
    a.script([Reply::status(500), Reply::Ok]);
    let r = gw.chat(chat_body("lm")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
    assert_eq!((a.hits(), b.hits()), (1, 1));
}

/// A stream cut by the gateway for an event too large (over 64 MiB) ends for the client at once:
/// it had waited, with its error event, until the upstream finished generating (tokens read and
/// dropped).
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_cut_for_an_event_too_large_ends_at_once() {
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    let first = format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {"content": "Hi"}}]})
    );
    let huge = format!("data: {{\"pad\":\"{}\"}}\n\n", "x".repeat(65 << 20));
    let mut events = vec![first.clone(), huge];
    events.extend(std::iter::repeat_n(first, 10));
    a.set_event_gap(Duration::from_millis(1500));
    a.script([Reply::Sse(events)]);
    let mut r = gw
        .chat(json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    // Timed from the first event: the large one follows 1.5 s later, then the upstream takes 15 s
    // more for the rest.
    let opening = r.chunk().await.unwrap().unwrap_or_default();
    assert!(String::from_utf8_lossy(&opening).contains("Hi"), "{opening:?}");
    let started = Instant::now();
    let mut text = String::new();
    while let Some(piece) = r.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&piece));
    }
    assert!(text.contains("stream_interrupted"), "{}", &text[..text.len().min(500)]);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "ended after {:?}",
        started.elapsed()
    );
}
