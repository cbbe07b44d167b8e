//! Metrics and logs after real traffic: counters and histograms move as they should, label sets stay
//! bounded, and no secret appears anywhere.

mod common;

use std::time::{Duration, Instant};

use common::mock::Style;
use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn metrics_follow_real_traffic() {
    let (a, _b, gw) = failover_pair().await;
    // One plain success, one failover, one stream, one unknown model, one client with a bad key,
    // and one arbitrary provider/model name.
    assert_eq!(gw.chat(chat_body("lm")).await.status(), 200);
    a.script([Reply::status(503)]);
    assert_eq!(gw.chat(chat_body("lm")).await.headers()["x-apiproxy-provider"], "beta");
    let r = gw
        .chat(json!({"model": "lm", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert!(r.text().await.unwrap().contains("[DONE]"));
    assert_eq!(gw.chat(chat_body("made-up-model-xyz")).await.status(), 404);
    let r = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("nope-nope-nope")
        .json(&chat_body("lm"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(gw.chat(chat_body("alpha/random-physical-name-123")).await.status(), 200);
    // A transient 500 is retried once on the same upstream: a retry, not a failover.
    a.script([Reply::status(500)]);
    assert_eq!(gw.chat(chat_body("lm")).await.headers()["x-apiproxy-provider"], "alpha");

    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = gw.metrics().await;
    let ok = [
        ("api", "openai_chat"),
        ("route", "logical"),
        ("model", "lm"),
        ("status_class", "2xx"),
        ("outcome", "ok"),
    ];
    assert_eq!(metric(&text, "apiproxy_requests_total", &ok), 4.0, "{text}");
    assert_eq!(
        metric(
            &text,
            "apiproxy_requests_total",
            &[("provider", "beta"), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        metric(&text, "apiproxy_failovers_total", &[("reason", "server_error")]),
        1.0
    );
    assert_eq!(
        metric(&text, "apiproxy_retries_total", &[("reason", "server_error")]),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "apiproxy_upstream_attempts_total",
            &[("provider", "alpha"), ("outcome", "5xx")]
        ),
        2.0
    );
    assert_eq!(
        metric(&text, "apiproxy_client_errors_total", &[("type", "model_not_found")]),
        1.0
    );
    assert_eq!(
        metric(&text, "apiproxy_client_errors_total", &[("type", "invalid_api_key")]),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "apiproxy_request_duration_seconds_count",
            &[("api", "openai_chat")]
        ),
        7.0
    );
    assert_eq!(
        metric(
            &text,
            "apiproxy_gateway_overhead_seconds_count",
            &[("api", "openai_chat")]
        ),
        7.0
    );
    // Every answer's header is timed under its own upstream, the 503 and 500 alpha gave before
    // another attempt too: four answers served and two left.
    let ttfb = |p: &str| metric(&text, "apiproxy_upstream_ttfb_seconds_count", &[("provider", p)]);
    assert_eq!((ttfb("alpha"), ttfb("beta")), (6.0, 1.0), "{text}");
    assert_eq!(
        metric(
            &text,
            "apiproxy_time_to_first_token_seconds_count",
            &[("provider", "alpha")]
        ),
        1.0
    );
    assert_eq!(metric(&text, "apiproxy_active_requests", &[]), 0.0);
    assert_eq!(metric(&text, "apiproxy_open_streams", &[]), 0.0);
    assert!(
        metric(
            &text,
            "apiproxy_upstream_error_rate",
            &[("provider", "alpha"), ("model", "m")]
        ) > 0.0
    );
    assert!(
        metric(
            &text,
            "apiproxy_upstream_latency_ewma_seconds",
            &[("provider", "beta"), ("model", "m")]
        ) > 0.0
    );
    // Bounded labels: nothing the client invented shows up.
    assert!(!text.contains("made-up-model-xyz"));
    assert!(!text.contains("random-physical-name-123"));
    assert!(
        text.contains("model=\"alpha/*\""),
        "provider-prefixed requests are labelled by provider"
    );
    assert!(!text.contains("secret") && !text.contains(CLIENT_KEY));
}

/// A stream's tokens are counted whatever the client said about usage chunks: one that turned them
/// off (or sent stream options without them) still gets none, and its tokens still reach the
/// metrics and its log line.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_s_tokens_are_counted_when_the_client_turned_usage_off() {
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    for options in [json!({"include_usage": false}), json!({})] {
        let r = gw
            .chat(json!({"model": "m", "stream": true, "stream_options": options, "messages": [{"role": "user", "content": "hi"}]}))
            .await;
        let events = sse_data(r).await;
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        let usage = events
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e).ok())
            .filter(|e| !e["usage"].is_null())
            .count();
        assert_eq!(usage, 0, "no usage chunk for this client: {events:?}");
        let sent = a.last().unwrap().json();
        assert_eq!(sent["stream_options"]["include_usage"], true, "{sent}");
    }
    let text = gw.metrics().await;
    let out = metric(
        &text,
        "apiproxy_tokens_total",
        &[("provider", "alpha"), ("kind", "output")],
    );
    assert!(out > 0.0, "{text}");
}

/// An upstream no route leads to any more (taken out of its logical model) leaves the per-upstream
/// gauges: an open circuit of a model nobody can reach must not keep an alert firing.
#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_taken_out_of_its_route_leaves_the_gauges() {
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ", models: [m]"))).await;
    let create = json!({"id": "lm", "upstreams": [{"provider": "alpha", "model": "old-model"}]});
    let r = gw
        .admin_req(reqwest::Method::POST, "/logical-models")
        .await
        .json(&create)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let text = gw.metrics().await;
    let old = [("provider", "alpha"), ("model", "old-model")];
    assert_eq!(metric(&text, "apiproxy_upstream_circuit_open", &old), 0.0);
    assert!(text.contains("model=\"old-model\""), "routed, so exported: {text}");
    let update = json!({"upstreams": [{"provider": "alpha", "model": "m"}]});
    let r = gw
        .admin_req(reqwest::Method::PUT, "/logical-models/lm")
        .await
        .json(&update)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let text = gw.metrics().await;
    assert!(!text.contains("model=\"old-model\""), "{text}");
    assert!(
        text.contains("apiproxy_upstream_circuit_open{model=\"m\",provider=\"alpha\"}"),
        "{text}"
    );
}

/// Requests Pingora refuses before any gateway code runs (a head that cannot be read, a `CONNECT`)
/// are still counted and logged.
#[tokio::test(flavor = "multi_thread")]
async fn requests_refused_before_the_gateway_sees_them_are_counted() {
    use tokio::io::AsyncWriteExt;
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    for (head, want) in [
        ("GET /health HTTP/1.1\r\nhost: x\r\nno colon here\r\n\r\n", "400"),
        (
            "CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n",
            "405",
        ),
    ] {
        let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
        sock.write_all(head.as_bytes()).await.unwrap();
        let answer = read_to_close(&mut sock, Duration::from_secs(5)).await;
        assert!(answer.starts_with(&format!("HTTP/1.1 {want}")), "{answer}");
    }
    let text = gw.metrics().await;
    for kind in ["malformed_request", "method_not_allowed"] {
        assert_eq!(
            metric(&text, "apiproxy_client_errors_total", &[("type", kind)]),
            1.0,
            "{text}"
        );
    }
    assert_eq!(
        metric(
            &text,
            "apiproxy_requests_total",
            &[("outcome", "rejected"), ("status_class", "4xx")]
        ),
        2.0,
        "{text}"
    );
    let logs = gw.logs_when(|l| l.contains("error=method_not_allowed")).await;
    assert!(logs.contains("error=malformed_request"), "{logs}");
}

/// Every kind of token an upstream reports is counted, as the README defines the kinds: `input`
/// with its cached part, `output` with its reasoning part, whatever the upstream's own layout
/// (Anthropic's `input_tokens` leaves the cache read out; Gemini's candidates leave thoughts out).
#[tokio::test(flavor = "multi_thread")]
async fn token_kinds_are_counted_as_documented() {
    use common::mock::usage;
    let styles = [
        ("oc", Style::OpenAiChat),
        ("re", Style::Responses),
        ("an", Style::Anthropic),
        ("ge", Style::Gemini),
    ];
    let mut mocks = Vec::new();
    let mut yaml = "providers:\n".to_string();
    for (id, style) in styles {
        let m = Mock::start_style(id, &[&format!("{id}-model")], style).await;
        yaml.push_str(&provider_yaml_styled(id, &m, &format!(", models: [{id}-model]")));
        mocks.push(m);
    }
    let gw = Gateway::start(&yaml).await;
    for (id, _) in styles {
        let r = gw.chat(chat_body(&format!("{id}-model"))).await;
        assert_eq!(r.status(), 200, "{id}");
    }
    let text = gw.metrics().await;
    let tokens = |id: &str, kind: &str| metric(&text, "apiproxy_tokens_total", &[("provider", id), ("kind", kind)]);
    for (id, _) in styles {
        assert_eq!(tokens(id, "input"), usage::PROMPT as f64, "{id} input: {text}");
        assert_eq!(tokens(id, "cached_input"), usage::CACHED as f64, "{id} cached: {text}");
    }
    for id in ["oc", "re", "ge"] {
        assert_eq!(tokens(id, "output"), usage::COMPLETION as f64, "{id} output: {text}");
        assert_eq!(
            tokens(id, "reasoning"),
            usage::REASONING as f64,
            "{id} reasoning: {text}"
        );
    }
}

/// The route weight gauge is the weight the router uses: each logical model's own upstream
/// weights (not the provider's), scaled by health.
#[tokio::test(flavor = "multi_thread")]
async fn route_weights_are_the_router_s() {
    let a = Mock::start("alpha", &["m"]).await;
    let b = Mock::start("beta", &["m"]).await;
    let gw = Gateway::start(&format!(
        "providers:\n{}{}logical_models:\n  - id: lm\n    upstreams: [{{provider: alpha, model: m, weight: 2}}, {{provider: beta, model: m, weight: 1}}]\n",
        provider_yaml("alpha", &a, ""),
        provider_yaml("beta", &b, "")
    ))
    .await;
    let text = gw.metrics().await;
    let route = |p: &'static str| [("route", "lm"), ("provider", p)];
    assert_eq!(metric(&text, "apiproxy_route_weight", &route("alpha")), 2.0, "{text}");
    assert_eq!(metric(&text, "apiproxy_route_weight", &route("beta")), 1.0, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_health_gauges_follow_a_cooldown() {
    let (a, _b, gw) = failover_pair().await;
    // alpha is rate limited for 30 s: the request fails over to beta, and alpha leaves the rotation.
    a.script([Reply::status_retry_after(429, 30)]);
    assert_eq!(gw.chat(chat_body("lm")).await.headers()["x-apiproxy-provider"], "beta");
    let text = gw.metrics().await;
    let up = |p: &'static str| [("provider", p), ("model", "m")];
    let cooldown = metric(&text, "apiproxy_upstream_cooldown_seconds", &up("alpha"));
    assert!(
        cooldown > 20.0 && cooldown <= 30.0,
        "alpha cool-down {cooldown} s\n{text}"
    );
    assert_eq!(metric(&text, "apiproxy_upstream_weight", &up("alpha")), 0.0);
    assert!(metric(&text, "apiproxy_upstream_weight", &up("beta")) > 0.0);
    assert_eq!(metric(&text, "apiproxy_upstream_cooldown_seconds", &up("beta")), 0.0);
    let route = |p: &'static str| [("route", "lm"), ("provider", p), ("model", "m")];
    assert_eq!(metric(&text, "apiproxy_route_weight", &route("alpha")), 0.0, "{text}");
    assert!(metric(&text, "apiproxy_route_weight", &route("beta")) > 0.0, "{text}");
    for p in ["alpha", "beta"] {
        assert_eq!(metric(&text, "apiproxy_upstream_circuit_open", &up(p)), 0.0, "{p}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn overhead_excludes_time_waiting_on_upstreams() {
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    // 400 ms before the answer's header, then a stream whose five events come 60 ms apart.
    a.script([Reply::Delay(Duration::from_millis(400), Box::new(Reply::Ok))]);
    assert_eq!(gw.chat(chat_body("m")).await.status(), 200);
    a.set_event_gap(Duration::from_millis(60));
    let r = gw
        .chat(json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert!(r.text().await.unwrap().contains("[DONE]"));

    tokio::time::sleep(Duration::from_millis(100)).await;
    let (total, overhead) = chat_total_and_overhead(&gw, 2).await;
    assert!(
        total >= 0.6,
        "two requests that waited ≥0.4 s and ≥0.24 s took {total} s"
    );
    // What remains is the gateway's own work (debug build, shared machine): below the shorter wait.
    assert!(overhead < 0.2, "overhead {overhead} s of {total} s total");
    assert!(overhead > 0.0);
}

/// Nor the client's: a body that takes its time to arrive; nor an answer held while it was judged
/// and then failed over.
#[tokio::test(flavor = "multi_thread")]
async fn overhead_excludes_a_slow_body_and_a_held_answer_tried_again() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (a, b, gw) = failover_pair().await;
    // A stream that opens with a keep-alive, then 300 ms later its error: held, then tried again.
    a.set_event_gap(Duration::from_millis(300));
    a.script([Reply::Sse(vec![
        ": keep-alive\n\n".into(),
        "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n".into(),
    ])]);
    let r = gw
        .chat(json!({"model": "lm", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert!(r.text().await.unwrap().contains("[DONE]"));
    assert_eq!(a.hits() + b.hits(), 2, "retried (on alpha or beta) after the error");
    // A client that sends its body 300 ms after its head.
    let body = chat_body("lm").to_string();
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\n\
         content-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    sock.write_all(body.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    sock.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    tokio::time::sleep(Duration::from_millis(100)).await;
    let (total, overhead) = chat_total_and_overhead(&gw, 2).await;
    assert!(total >= 0.6, "two requests that waited ≥0.3 s each took {total} s");
    // Below either 0.3 s wait, which is what leaving one in would add.
    assert!(overhead < 0.25, "overhead {overhead} s of {total} s total");
}

/// Translating a whole answer is the gateway's own work, though it happens while the answer is
/// held at its end: it counts as overhead, not as time waiting on the upstream.
#[tokio::test(flavor = "multi_thread")]
async fn overhead_includes_translating_a_whole_answer() {
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    // 4 MiB of text in an OpenAI Chat answer, which an Anthropic client gets translated.
    a.script([Reply::Large(4 * 1024 * 1024)]);
    let asked = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let r = gw
        .post("/v1/messages", asked, &[("anthropic-version", "2023-06-01")])
        .await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    let text = answer["content"][0]["text"].as_str().unwrap();
    assert!(text.len() >= 4 * 1024 * 1024, "translated whole");
    // What translating it costs here, measured the same way the gateway does it (parse, convert,
    // write), to judge the overhead against.
    let mut one = json!({"choices": [{"message": {"content": text}}]});
    let started = Instant::now();
    one = serde_json::from_slice(&serde_json::to_vec(&one).unwrap()).unwrap();
    let translation = started.elapsed().as_secs_f64();
    assert!(one["choices"].is_array());

    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = gw.metrics().await;
    let api = [("api", "anthropic")];
    assert_eq!(
        metric(&text, "apiproxy_gateway_overhead_seconds_count", &api),
        1.0,
        "{text}"
    );
    let overhead = metric(&text, "apiproxy_gateway_overhead_seconds_sum", &api);
    assert!(
        overhead >= translation / 2.0,
        "overhead {overhead} s, though one parse and write of the answer alone takes {translation} s"
    );
}

/// A stream the upstream breaks after its header (a reset, or a clean end without the stream's
/// terminator) is one attempt that failed, not an answered attempt plus a failed one (nor a
/// retry), in the attempts counter as in the request's outcome.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_broken_mid_way_is_one_failed_attempt() {
    for fault in [Reply::StreamAbort { after: 2 }, Reply::StreamCut { after: 2 }] {
        let a = Mock::start("alpha", &["m"]).await;
        let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
        a.script([fault.clone()]);
        let r = gw
            .chat(json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
            .await;
        assert_eq!(r.status(), 200);
        assert!(!r.text().await.unwrap_or_default().contains("[DONE]"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = gw.metrics().await;
        let alpha = |outcome| [("provider", "alpha"), ("outcome", outcome)];
        assert_eq!(
            metric(&text, "apiproxy_upstream_attempts_total", &alpha("transport_error")),
            1.0,
            "{fault:?}: {text}"
        );
        assert_eq!(
            metric(&text, "apiproxy_upstream_attempts_total", &alpha("2xx")),
            0.0,
            "{fault:?}: {text}"
        );
        assert_eq!(metric(&text, "apiproxy_retries_total", &[]), 0.0, "{fault:?}: {text}");
        assert_eq!(
            metric(&text, "apiproxy_requests_total", &[("outcome", "stream_cut")]),
            1.0,
            "{fault:?}: {text}"
        );
    }
}

/// Time to first token is to the stream's first content, not its first bytes: a role-only chunk
/// sent at once does not count, the text 300 ms later does.
#[tokio::test(flavor = "multi_thread")]
async fn time_to_first_token_waits_for_content() {
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    let chunk = |delta: &str, finish: &str| chat_chunk(0, delta, finish);
    a.set_event_gap(Duration::from_millis(300));
    a.script([Reply::Sse(vec![
        chunk(r#"{"role":"assistant","content":""}"#, "null"),
        chunk(r#"{"content":"hello"}"#, "null"),
        chunk("{}", "\"stop\""),
        "data: [DONE]\n\n".into(),
    ])]);
    let r = gw
        .chat(json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert!(r.text().await.unwrap().contains("hello"));
    let text = gw.metrics().await;
    let ttft = [("provider", "alpha")];
    assert_eq!(
        metric(&text, "apiproxy_time_to_first_token_seconds_count", &ttft),
        1.0,
        "{text}"
    );
    let sum = metric(&text, "apiproxy_time_to_first_token_seconds_sum", &ttft);
    assert!(sum >= 0.3, "first token after {sum} s: the role-only chunk counted");

    // An upstream that ignores `stream: true`: its whole answer, replayed as the client's stream,
    // has a first token when it has content, and none when it has nothing to say.
    let empty = r#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":""},"finish_reason":"stop"}]}"#;
    a.script([
        Reply::Whole(Box::new(Reply::Ok)),
        Reply::Status {
            status: 200,
            retry_after: None,
            body: empty.into(),
        },
    ]);
    for want in [2.0, 2.0] {
        let r = gw
            .chat(json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
            .await;
        assert!(r.text().await.unwrap().contains("[DONE]"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = gw.metrics().await;
        assert_eq!(
            metric(&text, "apiproxy_time_to_first_token_seconds_count", &ttft),
            want,
            "{text}"
        );
    }
}

/// Only clients' requests are counted as such: a load balancer's `/health` is neither counted nor
/// logged, and a client that hangs up while it sends its body left (`client_closed`), it was not
/// refused (no client error).
#[tokio::test(flavor = "multi_thread")]
async fn health_probes_and_clients_gone_mid_body_are_not_refusals() {
    use tokio::io::AsyncWriteExt;
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    for _ in 0..3 {
        assert_eq!(gw.client.get(gw.url("/health")).send().await.unwrap().status(), 200);
    }
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"model\":"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(sock);
    until("the hang-up counted", Duration::from_secs(5), async || {
        metric(&gw.metrics().await, "apiproxy_requests_total", &[]) == 1.0
    })
    .await;
    let text = gw.metrics().await;
    let closed = [("outcome", "client_closed")];
    assert_eq!(metric(&text, "apiproxy_requests_total", &closed), 1.0, "{text}");
    assert_eq!(metric(&text, "apiproxy_client_errors_total", &[]), 0.0, "{text}");
    assert_eq!(
        metric(&text, "apiproxy_request_duration_seconds_count", &[]),
        1.0,
        "{text}"
    );
    assert_eq!(metric(&text, "apiproxy_active_requests", &[]), 0.0, "{text}");
    let logs = gw.logs_when(|l| l.contains("client_closed")).await;
    assert!(!logs.contains("/health"), "{logs}");
    assert_eq!(
        logs.lines().filter(|l| l.contains("outcome=")).count(),
        1,
        "one request line: {logs}"
    );
}

/// Every upstream failing is the upstreams' doing, not a client error; a model listing is
/// labelled apart from answers; the circuit gauge says which state it is in; the request line
/// names the error the client was told of.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_listings_and_circuits_are_labelled_for_what_they_are() {
    let (a, b, gw) = failover_pair().await;
    a.script([Reply::status(503), Reply::status(503)]);
    b.script([Reply::status(503), Reply::status(503)]);
    assert_eq!(gw.chat(chat_body("lm")).await.status(), 503);
    assert_eq!(gw.chat(chat_body("made-up-model-xyz")).await.status(), 404);
    let listing = gw
        .client
        .get(gw.url("/v1/models"))
        .bearer_auth(CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(listing.status(), 200);
    let text = gw.metrics().await;
    assert_eq!(
        metric(
            &text,
            "apiproxy_client_errors_total",
            &[("type", "all_upstreams_failed")]
        ),
        0.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "apiproxy_client_errors_total", &[("type", "model_not_found")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "apiproxy_requests_total",
            &[("outcome", "upstream_error"), ("status_class", "5xx")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "apiproxy_requests_total", &[("api", "models")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "apiproxy_request_duration_seconds_count",
            &[("api", "openai_chat")]
        ),
        2.0,
        "{text}"
    );
    let state = |p, s| {
        metric(
            &text,
            "apiproxy_upstream_circuit_state",
            &[("provider", p), ("model", "m"), ("state", s)],
        )
    };
    assert_eq!(
        (
            state("alpha", "closed"),
            state("alpha", "open"),
            state("alpha", "half_open")
        ),
        (1.0, 0.0, 0.0),
        "{text}"
    );
    let logs = gw.logs_when(|l| l.contains("error=\"model_not_found\"")).await;
    assert!(logs.contains("error=\"all_upstreams_failed\""), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_with_timezone_one_line_per_request() {
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start_with_env(
        &format!("providers:\n{}", provider_yaml("alpha", &a, "")),
        &[("LOG_FORMAT", "json"), ("LOG_TIMEZONE", "Asia/Kolkata")],
    )
    .await;
    let r = gw
        .post(
            "/v1/chat/completions",
            chat_body("m"),
            &[("x-request-id", "trace-me-42")],
        )
        .await;
    assert_eq!(r.status(), 200);
    let logs = gw.logs_when(|l| l.contains("\"trace-me-42\"")).await;
    let line = request_line(&logs, "trace-me-42");
    let f = &line["fields"];
    assert_eq!(f["client"], "tester");
    assert_eq!(f["model"], "m");
    assert_eq!(f["provider"], "alpha");
    assert_eq!(f["upstream_model"], "m");
    // A provider-prefixed name: the client's model and the one the provider was asked for differ.
    let r = gw
        .post(
            "/v1/chat/completions",
            chat_body("alpha/m"),
            &[("x-request-id", "trace-prefixed-3")],
        )
        .await;
    assert_eq!(r.status(), 200);
    let logs = gw.logs_when(|l| l.contains("\"trace-prefixed-3\"")).await;
    let f = &request_line(&logs, "trace-prefixed-3")["fields"];
    assert_eq!(
        (&f["model"], &f["upstream_model"]),
        (&json!("alpha/m"), &json!("m")),
        "{f}"
    );
    assert_eq!(f["status"], 200);
    assert_eq!(f["attempts"], 1);
    assert!(f["latency_ms"].is_u64());
    assert!(line["timestamp"].as_str().unwrap().ends_with("+05:30"), "{line}");
    // A Gemini request names its model in the path: the line has it too.
    let r = gw
        .post(
            "/v1beta/models/m:generateContent",
            json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
            &[("x-request-id", "trace-gemini-7")],
        )
        .await;
    assert_eq!(r.status(), 200);
    let logs = gw.logs_when(|l| l.contains("\"trace-gemini-7\"")).await;
    let line = request_line(&logs, "trace-gemini-7");
    assert_eq!(line["fields"]["model"], "m", "{line}");
    // No bodies without `LOG_BODY_BYTES`: neither field, and the prompt's words nowhere.
    for id in ["trace-me-42", "trace-gemini-7"] {
        let f = &request_line(&logs, id)["fields"];
        assert!(
            f.get("request_body").is_none() && f.get("response_body").is_none(),
            "{f}"
        );
    }
    assert!(!logs.contains("hello from alpha"), "no answer bodies in logs");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_key_in_the_query_stays_out_of_the_logs_when_a_request_fails_over() {
    // A Gemini client may send its key as `?key=`; an attempt that fails (here a refused
    // connection) is retried.
    let a = Mock::start("alpha", &["m"]).await;
    let dead = DeadPort::new();
    let dead_port = dead.port;
    let gw = Gateway::start(&format!(
        "providers:\n  - {{id: dead, base_url: \"http://127.0.0.1:{dead_port}\", api_keys: [\"sk-dead-secret-key\"], models: [m]}}\n{}\
         logical_models:\n  - id: lm\n    upstreams: [{{provider: dead, model: m}}, {{provider: alpha, model: m, priority: 1}}]\n",
        provider_yaml("alpha", &a, "")
    ))
    .await;
    let r = gw.gemini_with_query_key("lm").await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(a.hits(), 1, "served by the second upstream");
    // One line for the request, with both attempts (Pingora's own line per retry is suppressed).
    let logs = gw.logs_when(|l| l.contains("attempts=2")).await;
    assert_eq!(logs.matches("INFO request ").count(), 1, "{logs}");
    assert!(!logs.contains("retry"), "a line of its own for the retry:\n{logs}");
    assert!(!logs.contains(CLIENT_KEY), "the client's key reached the logs:\n{logs}");
}

/// With `LOG_BODY_BYTES`, the request line shows the start of the client's body and of the answer
/// it got (translated or not, or the gateway's own refusal), cut at the limit; without it, neither
/// (`json_logs_with_timezone_one_line_per_request`).
#[tokio::test(flavor = "multi_thread")]
async fn bodies_are_logged_only_when_asked_for_and_cut() {
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start_with_env(
        &format!("providers:\n{}", provider_yaml("alpha", &a, "")),
        &[("LOG_FORMAT", "json"), ("LOG_BODY_BYTES", "48")],
    )
    .await;
    let prompt = "Tell me about the weather in Paris — in detail, please.";
    let body = json!({"model": "m", "messages": [{"role": "user", "content": prompt}]});
    let r = gw
        .post("/v1/chat/completions", body.clone(), &[("x-request-id", "with-bodies")])
        .await;
    assert_eq!(r.status(), 200);
    let answer = r.text().await.unwrap();
    let logs = gw.logs_when(|l| l.contains("\"with-bodies\"")).await;
    let line = request_line(&logs, "with-bodies");
    let sent = serde_json::to_string(&body).unwrap();
    let logged = line["fields"]["request_body"].as_str().unwrap();
    assert_eq!(logged, format!("{}…", &sent[..48]), "{line}");
    let logged = line["fields"]["response_body"].as_str().unwrap();
    assert_eq!(logged, format!("{}…", &answer[..48]), "{line}");
    // An Anthropic client's answer as it got it, translated.
    let short = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let r = gw
        .post(
            "/v1/messages",
            short.clone(),
            &[("x-request-id", "short-one"), ("anthropic-version", "2023-06-01")],
        )
        .await;
    assert_eq!(r.status(), 200);
    let answer = r.text().await.unwrap();
    let logs = gw.logs_when(|l| l.contains("\"short-one\"")).await;
    let line = request_line(&logs, "short-one");
    let sent = serde_json::to_string(&short).unwrap();
    assert_eq!(
        line["fields"]["request_body"].as_str().unwrap(),
        format!("{}…", &sent[..48])
    );
    assert!(answer.contains("\"type\":\"message\""), "{answer}");
    assert_eq!(
        line["fields"]["response_body"].as_str().unwrap(),
        format!("{}…", &answer[..48])
    );
    // A body the gateway refuses (a model nothing serves) and the refusal it wrote.
    let unknown = json!({"model": "nobody-serves-this", "messages": [{"role": "user", "content": "hello"}]});
    let r = gw
        .post(
            "/v1/chat/completions",
            unknown.clone(),
            &[("x-request-id", "refused-one")],
        )
        .await;
    assert_eq!(r.status(), 404);
    let refusal = r.text().await.unwrap();
    let logs = gw.logs_when(|l| l.contains("\"refused-one\"")).await;
    let line = request_line(&logs, "refused-one");
    let sent = serde_json::to_string(&unknown).unwrap();
    assert_eq!(
        line["fields"]["request_body"].as_str().unwrap(),
        format!("{}…", &sent[..48]),
        "{line}"
    );
    assert_eq!(
        line["fields"]["response_body"].as_str().unwrap(),
        format!("{}…", &refusal[..48]),
        "{line}"
    );
    // A stream the upstream broke off ends, for the client and in the line, with the error event
    // the gateway wrote.
    a.script([Reply::StreamAbort { after: 2 }]);
    let wide = Gateway::start_with_env(
        &format!("providers:\n{}", provider_yaml("alpha", &a, "")),
        &[("LOG_FORMAT", "json"), ("LOG_BODY_BYTES", "8192")],
    )
    .await;
    let body = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let r = wide
        .post("/v1/chat/completions", body, &[("x-request-id", "cut-one")])
        .await;
    let answer = r.text().await.unwrap();
    let last = answer.trim_end().lines().last().unwrap().to_string();
    assert!(last.contains("error"), "{answer}");
    let logs = wide.logs_when(|l| l.contains("\"cut-one\"")).await;
    let line = request_line(&logs, "cut-one");
    let logged = line["fields"]["response_body"].as_str().unwrap();
    assert!(logged.trim_end().ends_with(&last), "{line}");
}

/// The JSON log line of the request with this id.
fn request_line(logs: &str, id: &str) -> Value {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["request_id"] == id)
        .unwrap_or_else(|| panic!("no JSON request line for {id} in:\n{logs}"))
}

#[test]
fn dashboard_only_uses_metrics_the_gateway_exports() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dashboard = std::fs::read_to_string(format!("{root}/conf/grafana/apiproxy-dashboard.json")).unwrap();
    let v: Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let source = std::fs::read_to_string(format!("{root}/src/metrics.rs")).unwrap();
    // Label values are set where requests are counted, not only in `metrics.rs`.
    let sources: String = ["src/metrics.rs", "src/gateway/logging.rs", "src/state/facade.rs"]
        .iter()
        .map(|f| std::fs::read_to_string(format!("{root}/{f}")).unwrap())
        .collect();
    let mut used = 0;
    for panel in v["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("apiproxy_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let base = name.trim_end_matches("_bucket");
                assert!(
                    source.contains(&format!("\"{base}\"")),
                    "dashboard uses {name}, which the gateway does not export"
                );
                used += 1;
            }
            for label in expr_labels(expr) {
                assert!(
                    source.contains(&format!("\"{label}\"")),
                    "dashboard groups or selects by {label}, which no metric has: {expr}"
                );
            }
            for value in selected_values(expr) {
                assert!(
                    sources.contains(&format!("\"{value}\"")),
                    "dashboard selects the label value {value}, which the gateway never sets: {expr}"
                );
            }
        }
    }
    assert!(used > 15);
}

/// The label names a PromQL expression groups by (`by (a, b)`) or selects on (`{a="x"}`); the
/// dashboard uses no `without`, `on` or `ignoring`.
fn expr_labels(expr: &str) -> Vec<String> {
    let mut labels = Vec::new();
    for (i, at) in expr.match_indices("by (").chain(expr.match_indices("by(")) {
        let list = &expr[i + at.len()..];
        let list = &list[..list.find(')').unwrap()];
        labels.extend(list.split(',').map(|l| l.trim().to_string()).filter(|l| l != "le"));
    }
    for (i, _) in expr.match_indices('{') {
        let sel = &expr[i + 1..];
        let sel = &sel[..sel.find('}').unwrap()];
        for matcher in sel.split(',') {
            let name: String = matcher
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            labels.push(name);
        }
    }
    labels
}

/// The label values a PromQL expression selects (`{a="x"}`, `{a=~"x|y"}`), each alternative alone.
fn selected_values(expr: &str) -> Vec<String> {
    let mut values = Vec::new();
    for (i, _) in expr.match_indices('{') {
        let sel = &expr[i + 1..];
        let sel = &sel[..sel.find('}').unwrap()];
        for matcher in sel.split(',') {
            let Some((_, quoted)) = matcher.split_once('"') else {
                continue;
            };
            let value = quoted.trim_end_matches('"');
            // Literal alternatives only: a regex or a Grafana variable names no single value.
            let literal = |v: &&str| !v.contains(['$', '.', '*', '+', '[']);
            values.extend(value.split('|').filter(literal).map(str::to_string));
        }
    }
    values
}

/// The OpenAI Chat requests' total time and the gateway's overhead, summed, in seconds, once the
/// overhead histogram has counted `requests`.
async fn chat_total_and_overhead(gw: &Gateway, requests: usize) -> (f64, f64) {
    let text = gw.metrics().await;
    let api = [("api", "openai_chat")];
    let count = metric(&text, "apiproxy_gateway_overhead_seconds_count", &api);
    assert_eq!(count, requests as f64, "{text}");
    (
        metric(&text, "apiproxy_request_duration_seconds_sum", &api),
        metric(&text, "apiproxy_gateway_overhead_seconds_sum", &api),
    )
}

/// A whole answer past what the gateway keeps of it (8 MiB: embeddings of many texts, say) still
/// has its usage counted: it is read at the answer's end.
#[tokio::test(flavor = "multi_thread")]
async fn the_usage_of_an_answer_too_large_to_keep_is_counted() {
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    a.script([Reply::Large(9 * 1024 * 1024)]);
    let r = gw
        .chat(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().len() > 9 * 1024 * 1024);
    let text = gw.metrics().await;
    assert_eq!(
        metric(&text, "apiproxy_tokens_total", &[("kind", "input")]),
        common::mock::usage::PROMPT as f64,
        "{text}"
    );
}
