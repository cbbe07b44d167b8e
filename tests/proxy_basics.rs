//! The client API: health, models, auth, request validation, routing and streaming.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

async fn two_providers() -> (Mock, Mock, Gateway) {
    let a = Mock::start("alpha", &["gpt-a", "shared-model"]).await;
    let b = Mock::start("beta", &["gpt-b", "shared-model"]).await;
    let yaml = format!(
        "providers:\n{}{}logical_models:\n  - id: fast-model\n    upstreams:\n      - {{provider: alpha, model: gpt-a}}\n",
        provider_yaml("alpha", &a, ""),
        provider_yaml("beta", &b, ", models: [gpt-b, shared-model, static-only]"),
    );
    let gw = Gateway::start(&yaml).await;
    (a, b, gw)
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_aggregated_models() {
    let (_a, _b, gw) = two_providers().await;
    let r = gw.client.get(gw.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));

    let r = gw.client.get(gw.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 401, "models need a key");

    for path in ["/models", "/v1/models"] {
        let ids = gw.model_ids(path, CLIENT_KEY).await;
        // alpha's list was discovered from the mock, beta's is static; shared-model appears once.
        for want in ["gpt-a", "gpt-b", "shared-model", "static-only", "fast-model"] {
            assert!(ids.iter().any(|i| i == want), "{want} missing from {ids:?}");
        }
        assert_eq!(ids.iter().filter(|i| *i == "shared-model").count(), 1);
    }

    // In each API's shape: Anthropic's for a client that sends `anthropic-version` (Claude Code's
    // model discovery), Gemini's at `/v1beta/models` (google-genai's `models.list`).
    let r = gw
        .client
        .get(gw.url("/v1/models"))
        .header("x-api-key", CLIENT_KEY)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let first = &v["data"][0];
    assert_eq!(first["type"], "model", "{v}");
    assert!(
        first["display_name"].is_string() && first["created_at"].is_string(),
        "{v}"
    );
    assert_eq!(v["has_more"], false);
    // Its errors in the same shape: Claude Code reads a bad key as Anthropic says it.
    let r = gw
        .client
        .get(gw.url("/v1/models"))
        .header("x-api-key", "apx-not-a-key")
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (&v["type"], &v["error"]["type"]),
        (&json!("error"), &json!("authentication_error")),
        "{v}"
    );
    let r = gw
        .client
        .get(gw.url("/v1beta/models"))
        .header("x-goog-api-key", CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let names: Vec<&str> = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(names.contains(&"models/gpt-a"), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_forms_and_refusals() {
    let (_a, _b, gw) = two_providers().await;
    let url = gw.url("/v1/chat/completions");
    let body = chat_body("gpt-a");

    let r = gw.client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert!(v["error"]["message"].as_str().unwrap().contains("Missing API key"));

    let r = gw
        .client
        .post(&url)
        .bearer_auth("wrong-key-123")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let r = gw
        .client
        .post(&url)
        .header("x-api-key", CLIENT_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(CLIENT_KEY);
    let r = gw.client.post(&url).bearer_auth(b64).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_openai_errors() {
    let (a, b, gw) = two_providers().await;
    let url = gw.url("/v1/chat/completions");
    let send_raw = |body: &'static str| {
        gw.client
            .post(&url)
            .bearer_auth(CLIENT_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let r = send_raw("{not json").await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");

    let r = send_raw(r#"{"messages":[]}"#).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "missing_model");

    let r = gw.chat(chat_body("no-such-model")).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
    assert!(v["error"]["message"].as_str().unwrap().contains("no-such-model"));

    let r = gw
        .client
        .get(gw.url("/v1/unknown"))
        .bearer_auth(CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["error"].is_object());
    // Errors about a path of another API are said in that API's shape.
    let r = gw
        .client
        .get(gw.url("/v1/messages"))
        .bearer_auth(CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST", "a 405 names the path's methods");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "Anthropic's shape: {v}");
    let r = gw
        .client
        .post(gw.url("/v1beta/models/m:embedContent"))
        .bearer_auth(CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["status"], "NOT_FOUND", "Gemini's shape: {v}");

    assert_eq!(a.hits() + b.hits(), 0, "nothing invalid reached an upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn body_over_the_limit_is_413() {
    let a = Mock::start("alpha", &["m"]).await;
    let yaml = format!(
        "server: {{max_body_bytes: 100000}}\nproviders:\n{}",
        provider_yaml("alpha", &a, "")
    );
    let gw = Gateway::start(&yaml).await;
    let big = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(200_000)}]});
    let r = gw.chat(big).await;
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "request_too_large");
    assert_eq!(a.hits(), 0);
    // A body just under the limit passes.
    let ok = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(90_000)}]});
    assert_eq!(gw.chat(ok).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_and_rewrites_only_the_model() {
    let (a, b, gw) = two_providers().await;
    // Logical model -> alpha's gpt-a; the rest of the body byte for byte.
    let raw = r#"{"messages":[{"role":"user","content":"hi"}],"temperature":0.70,"model":"fast-model","x_unknown":{"k":[1,2.50]}}"#;
    let r = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .header("x-request-id", "client-chosen-id")
        // Set by the OpenAI SDK from OPENAI_ORG_ID / OPENAI_PROJECT_ID: they name the client's own
        // account, which the provider's key does not belong to (it would answer 401).
        .header("openai-organization", "org-client")
        .header("openai-project", "proj_client")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-apiproxy-provider"], "alpha");
    assert_eq!(r.headers()["x-request-id"], "client-chosen-id");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "hello from alpha");
    let sent = &a.requests()[0];
    assert_eq!(String::from_utf8_lossy(&sent.body), raw.replace("fast-model", "gpt-a"));
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.header("authorization"), Some("Bearer sk-alpha-secret-key"));
    assert_eq!(sent.header("x-request-id"), Some("client-chosen-id"));
    assert_eq!(sent.header("openai-organization"), None);
    assert_eq!(sent.header("openai-project"), None);

    // provider/model goes to that provider only, with the bare model name.
    let r = gw.chat(chat_body("beta/anything-new")).await;
    assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
    assert_eq!(b.requests()[0].json()["model"], "anything-new");
    assert!(!r.headers()["x-request-id"].is_empty());

    // Zero-config: gpt-b is only in beta's list; static-only only in beta's static list.
    for m in ["gpt-b", "static-only"] {
        let r = gw.chat(chat_body(m)).await;
        assert_eq!(r.status(), 200, "{m}");
        assert_eq!(r.headers()["x-apiproxy-provider"], "beta");
    }
    // shared-model is served by both over time.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..30 {
        let r = gw.chat(chat_body("shared-model")).await;
        seen.insert(r.headers()["x-apiproxy-provider"].to_str().unwrap().to_string());
    }
    assert_eq!(seen.len(), 2, "zero-config group spreads over both providers: {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_api_goes_natively_to_responses() {
    let (a, _b, gw) = two_providers().await;
    let r = gw
        .post("/v1/responses", json!({"model": "gpt-a", "input": "hi"}), &[])
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "response");
    assert_eq!(a.requests()[0].path, "/v1/responses");
    assert_eq!(a.requests()[0].json()["input"], "hi");

    let r = gw
        .post(
            "/v1/responses",
            json!({"model": "gpt-a", "input": "hi", "stream": true}),
            &[],
        )
        .await;
    let text = r.text().await.unwrap();
    assert!(text.contains("event: response.completed"), "{text}");
    assert!(!text.contains("stream_interrupted"));
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_arrive_event_by_event() {
    let a = Mock::start("alpha", &["m"]).await;
    a.set_event_gap(Duration::from_millis(150));
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    let started = Instant::now();
    let r = gw
        .chat(json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut stream = r.bytes_stream();
    let mut arrivals = Vec::new();
    let mut all = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        arrivals.push(started.elapsed());
        all.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(all).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(text.matches("data: ").count(), 7);
    // The mock spends ~6 × 150 ms on the stream; the first event must not wait for the last.
    let total = *arrivals.last().unwrap();
    assert!(arrivals.len() >= 4, "events were batched: {arrivals:?}");
    assert!(
        arrivals[0] + Duration::from_millis(500) < total,
        "first event at {:?}, end at {total:?}",
        arrivals[0]
    );
}

/// Reads a whole streamed answer; says which parts were keep-alive comments and which events.
async fn stream_parts(r: reqwest::Response) -> (usize, Vec<String>) {
    assert_eq!(r.status(), 200);
    // Gemini's events end with CRLF pairs.
    let text = r.text().await.unwrap().replace("\r\n", "\n");
    let blocks: Vec<&str> = text.split("\n\n").filter(|b| !b.is_empty()).collect();
    let pings = blocks.iter().filter(|b| **b == ": ping").count();
    // The upstream lingers after its last event: nothing follows the end of the stream.
    assert_ne!(blocks.last(), Some(&": ping"), "a keep-alive after the end: {text}");
    // Every other block is a whole event: a keep-alive never lands inside one.
    let events = blocks
        .iter()
        .filter(|b| **b != ": ping")
        .map(|b| {
            for line in b.lines() {
                if let Some(data) = line.strip_prefix("data: ").filter(|d| *d != "[DONE]") {
                    assert!(
                        serde_json::from_str::<Value>(data).is_ok(),
                        "not a whole event: {line}\n{text}"
                    );
                } else {
                    assert!(line.starts_with("event: ") || line == "data: [DONE]", "{line}\n{text}");
                }
            }
            b.to_string()
        })
        .collect();
    (pings, events)
}

/// An HTTP/1.0 client knows no chunked framing: a stream (or any answer without a length) reaches
/// it close-delimited, whole, and the connection ends with it.
#[tokio::test(flavor = "multi_thread")]
async fn an_http_1_0_client_gets_its_stream_unchunked() {
    use tokio::io::AsyncWriteExt;
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    let body = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.0\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\n\
         connection: keep-alive\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut sock, Duration::from_secs(10))
        .await
        .to_ascii_lowercase();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(body.starts_with("data: {"), "no chunk sizes: {body}");
    assert!(body.trim_end().ends_with("data: [done]"), "{body}");
}

/// An upstream that answers with an `HTTP/1.0` status line: the client still gets an HTTP/1.1
/// answer, which may be chunked (a translated one is), never an HTTP/1.0 one with chunked framing.
#[tokio::test(flavor = "multi_thread")]
async fn an_http_1_0_upstream_s_answer_reaches_the_client_as_http_1_1() {
    let a = Mock::start_style("anth", &["claude-x"], Style::Anthropic).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml_styled("anth", &a, ""))).await;
    let message = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "hello over 1.0"}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 3, "output_tokens": 4}
    })
    .to_string();
    a.script([Reply::Raw(format!(
        "HTTP/1.0 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{message}",
        message.len()
    ))]);
    let r = gw.chat(chat_body("claude-x")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "hello over 1.0", "{v}");
}

/// A stream whose upstream sends its header and then thinks for a long time before its first event
/// is held (its first event could be an error to fail over) only for the hold's 5 s: then the
/// client gets the header and keep-alives, not silence an idle timeout in between would cut.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_silent_before_its_first_event_gets_its_header_and_keep_alives() {
    let (a, gw) = keepalive_gateway(200, 20000).await;
    a.set_first_event_delay(Duration::from_secs(7));
    let body = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let sent = Instant::now();
    let mut sock = send_raw_chat(&gw, &body).await;
    let mut seen = Vec::new();
    read_until(&mut sock, &mut seen, ": ping", Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&seen).into_owned();
    let heard = sent.elapsed();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!text.contains("data:"), "before the first event: {text}");
    assert!(heard < Duration::from_secs(6), "first keep-alive after {heard:?}");
    // The stream then goes on whole.
    read_until(&mut sock, &mut seen, "[DONE]", Duration::from_secs(10)).await;
    assert!(String::from_utf8_lossy(&seen).contains("tok4"));
}

/// A stream that opens its envelope (a role-only chunk) and then reasons silently is released
/// about a second after the envelope, not after the 5 s hold: an error after the envelope comes
/// at once, a model's first words may not.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_silent_after_its_envelope_is_released_soon() {
    let (a, gw) = keepalive_gateway(20000, 20000).await;
    let chunk = |delta: &str, finish: &str| {
        format!(
            "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
        )
    };
    a.set_event_gap(Duration::from_secs(3));
    a.script([Reply::Sse(vec![
        chunk(r#"{"role":"assistant","content":""}"#, "null"),
        chunk(r#"{"content":"late words"}"#, r#""stop""#),
        "data: [DONE]\n\n".to_string(),
    ])]);
    let body = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let sent = Instant::now();
    let mut sock = send_raw_chat(&gw, &body).await;
    let mut seen = Vec::new();
    read_until(&mut sock, &mut seen, "\"role\"", Duration::from_secs(10)).await;
    let heard = sent.elapsed();
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!text.contains("late words"), "{text}");
    assert!(
        heard < Duration::from_millis(2500),
        "the envelope reached the client after {heard:?}"
    );
    read_until(&mut sock, &mut seen, "[DONE]", Duration::from_secs(10)).await;
    assert!(String::from_utf8_lossy(&seen).contains("late words"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_upstream_stream_gets_keep_alives_between_whole_events() {
    let (a, gw) = keepalive_gateway(200, 1500).await;

    // Events 600 ms apart: the client hears from the gateway at least once in each gap.
    a.set_event_gap(Duration::from_millis(600));
    let (pings, events) = stream_parts(
        gw.chat(json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
            .await,
    )
    .await;
    assert_eq!(events.len(), 7, "{events:?}");
    assert_eq!(events.last().map(String::as_str), Some("data: [DONE]"));
    assert!((6..=24).contains(&pings), "{pings} keep-alives over six 600 ms gaps");

    // An event that pauses half-way: the client keeps hearing keep-alives, never half an event.
    let chunk = |content: &str| {
        format!(
            r#"{{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{{"index":0,"delta":{{"content":"{content}"}},"finish_reason":null}}]}}"#
        )
    };
    let whole = format!("data: {}\n\n", chunk("hello"));
    let (head, tail) = whole.split_at(whole.len() / 2);
    // (The first event carries content: the envelope alone would still be held, unseen.)
    a.script([Reply::Sse(vec![
        format!("data: {}\n\n", chunk("a")),
        head.to_string(),
        tail.to_string(),
        r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#.to_string() + "\n\n",
        "data: [DONE]\n\n".to_string(),
    ])]);
    let (pings, events) = stream_parts(
        gw.chat(json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
            .await,
    )
    .await;
    assert_eq!(events[1], whole.trim_end());
    assert!(pings >= 3, "{pings} keep-alives, the half-way pause included");

    // Translated (Anthropic client, OpenAI upstream): the same comment, between whole events.
    let body = json!({"model": "m", "max_tokens": 10, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let (pings, events) = stream_parts(gw.post("/v1/messages", body, &[]).await).await;
    assert!(events.last().unwrap().starts_with("event: message_stop"), "{events:?}");
    assert!(pings >= 6, "{pings} keep-alives to the Anthropic client");

    // Gemini clients get none: their SDK reads every line of a stream as a JSON event.
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}]});
    let (pings, events) = stream_parts(
        gw.post("/v1beta/models/m:streamGenerateContent?alt=sse", body, &[])
            .await,
    )
    .await;
    assert_eq!(pings, 0);
    assert!(!events.is_empty());

    // An upstream that keeps talking leaves no room for one (one, on a stalled machine).
    a.set_event_gap(Duration::from_millis(5));
    let (pings, events) = stream_parts(
        gw.chat(json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
            .await,
    )
    .await;
    assert!(pings <= 1 && events.len() == 7, "{pings} {events:?}");

    // Keep-alives to the client do not keep a stalled upstream alive: its idle_ms still ends it.
    a.script([Reply::StreamStall { after: 2 }]);
    let started = Instant::now();
    let r = gw
        .chat(json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    let text = r.text().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "cut after {:?}",
        started.elapsed()
    );
    assert!(text.contains(": ping"), "{text}");
    assert!(text.contains("stream_interrupted"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn accept_event_stream_asks_for_a_stream() {
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    let r = gw
        .post(
            "/v1/chat/completions",
            chat_body("m"),
            &[("accept", "text/event-stream")],
        )
        .await;
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let data = sse_data(r).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(a.requests()[0].json()["stream"], true);
    // A body that says `"stream": false` gets the whole answer it asked for.
    let mut whole = chat_body("m");
    whole["stream"] = json!(false);
    let r = gw
        .post(
            "/v1/chat/completions",
            whole,
            &[("accept", "text/event-stream, application/json")],
        )
        .await;
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion", "{v}");
    assert_eq!(a.requests()[1].json()["stream"], false);
}

/// An upstream that answers every request with the same chunked SSE stream, written in slices of
/// `slice` bytes (0: all at once) with a pause between them, so chunk heads, payloads and CRLFs are
/// cut at every place a reader can meet them, or many chunks arrive in one read.
async fn sliced_sse_upstream(events: usize, slice: usize) -> String {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut body = Vec::new();
    for i in 0..events {
        let data = format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t{i} \"}},\"finish_reason\":null}}]}}\n\n"
        );
        body.extend_from_slice(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes());
    }
    let done = "data: [DONE]\n\n";
    body.extend_from_slice(format!("{:x}\r\n{done}\r\n0\r\n\r\n", done.len()).as_bytes());
    let mut answer =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    answer.extend_from_slice(&body);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let _ = sock.set_nodelay(true);
                let mut buf = Vec::new();
                while common::mock::read_request(&mut sock, &mut buf).await.is_some() {
                    let step = if slice == 0 { answer.len() } else { slice };
                    for piece in answer.chunks(step) {
                        if sock.write_all(piece).await.is_err() {
                            return;
                        }
                        if slice != 0 {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_streams_survive_any_split() {
    // (slice size, events): byte-sized slices on a short stream keep the test quick.
    let cases = [(0, 40), (1, 3), (2, 4), (5, 10), (13, 40), (64, 40), (700, 40)];
    let mut yaml = "providers:\n".to_string();
    for (i, (slice, events)) in cases.iter().enumerate() {
        let url = sliced_sse_upstream(*events, *slice).await;
        yaml.push_str(&provider_yaml_api(
            &format!("raw{i}"),
            &url,
            "openai",
            &format!(", models: [m{i}]"),
        ));
    }
    let gw = Gateway::start(&yaml).await;
    for (i, (slice, events)) in cases.iter().enumerate() {
        // Twice: the second rides the pooled upstream connection.
        for _ in 0..2 {
            let resp = gw
                .chat(
                    json!({"model": format!("m{i}"), "stream": true, "stream_options": {"include_usage": true},
                    "messages": [{"role": "user", "content": "hi"}]}),
                )
                .await;
            assert_eq!(resp.status(), 200, "slice {slice}");
            let data = sse_data(resp).await;
            let text: String = data
                .iter()
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
                .collect();
            let want: String = (0..*events).map(|i| format!("t{i} ")).collect();
            assert_eq!(text, want, "slice {slice}");
            assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "slice {slice}");
        }
    }
}

/// A whole chat completion saying "answer {n}", as raw HTTP/1.1 with its length.
fn numbered_answer(n: usize) -> String {
    let body = format!(
        "{{\"id\":\"c{n}\",\"object\":\"chat.completion\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"answer {n}\"}},\"finish_reason\":\"stop\"}}]}}"
    );
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Asks `gw` for a chat answer and checks it is the upstream's `numbered_answer(i)`.
async fn expect_numbered_answer(gw: &Gateway, i: usize) {
    let resp = gw.chat(chat_body("m")).await;
    assert_eq!(resp.status(), 200, "request {i}");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        format!("answer {i}"),
        "request {i}"
    );
}

/// An upstream that answers one request per connection and then, after `linger`, closes the
/// connection without having said so (no `connection: close`): pooled connections go stale.
async fn closing_upstream(linger: Duration) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                if common::mock::read_request(&mut sock, &mut Vec::new()).await.is_none() {
                    return;
                }
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let _ = sock.write_all(numbered_answer(n).as_bytes()).await;
                tokio::time::sleep(linger).await;
                // Dropping the socket closes it: the gateway's pooled copy is now stale.
            });
        }
    });
    (format!("http://{addr}"), requests)
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_pooled_upstream_connections_are_not_used() {
    let (url, requests) = closing_upstream(Duration::from_millis(20)).await;
    let yaml = format!(
        "providers:\n{}",
        provider_yaml_api("closer", &url, "openai", ", models: [m]")
    );
    let gw = Gateway::start(&yaml).await;
    for i in 0..5 {
        expect_numbered_answer(&gw, i).await;
        // Longer than the upstream keeps an idle connection: the pooled one is closed by now.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Each request reached the upstream exactly once: no stale connection swallowed one, and none
    // was sent twice.
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_keep_alive_connection_is_judged_by_each_request_s_own_key() {
    use http_body_util::{BodyExt, Full};
    const SECOND_KEY: &str = "second-client-key-9876543210";
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!(
        "  - {{name: second, key: \"{SECOND_KEY}\"}}\nproviders:\n{}",
        provider_yaml("alpha", &a, "")
    ))
    .await;
    let sock = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(sock))
        .await
        .unwrap();
    tokio::spawn(conn);
    let body = chat_body("m").to_string();
    // The gateway remembers the key a connection was accepted with; a request with another key, a
    // wrong one or none on the same connection must still be judged by its own, and a refusal
    // leaves the connection open for the next request.
    let steps: [(Option<&str>, u16); 7] = [
        (Some(CLIENT_KEY), 200),
        (Some(SECOND_KEY), 200),
        (Some(CLIENT_KEY), 200),
        (Some("wrong-key-123"), 401),
        (Some(CLIENT_KEY), 200),
        (None, 401),
        (Some(SECOND_KEY), 200),
    ];
    for (i, (key, want)) in steps.into_iter().enumerate() {
        let mut req = hyper::Request::post("/v1/chat/completions")
            .header("host", "gw")
            .header("content-type", "application/json");
        if let Some(key) = key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        send.ready().await.expect("the connection stays open");
        let resp = send
            .send_request(req.body(Full::new(bytes::Bytes::from(body.clone()))).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), want, "step {i}");
        resp.into_body().collect().await.unwrap();
    }
    assert_eq!(a.hits(), 5);
    // Tokens are counted for the key each request carried (the last request's count may land just
    // after its answer).
    let prompt = common::mock::usage::PROMPT as f64;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let text = gw.metrics().await;
        let input = |client: &str| metric(&text, "apiproxy_tokens_total", &[("client", client), ("kind", "input")]);
        let (tester, second) = (input("tester"), input("second"));
        if second == 2.0 * prompt || Instant::now() > deadline {
            assert_eq!((tester, second), (3.0 * prompt, 2.0 * prompt));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_goes_away_ends_its_request_at_once() {
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    a.script([Reply::Delay(Duration::from_secs(4), Box::new(Reply::Ok))]);
    let body = chat_body("m").to_string();
    let sock = send_raw_chat(&gw, &body).await;
    until_it_reaches(&a).await;
    // The client hangs up while the upstream is still thinking: the gateway notices at once instead
    // of holding the request (and the upstream connection) until the answer comes.
    drop(sock);
    let gone = Instant::now();
    loop {
        let text = gw.metrics_now().await;
        if metric(&text, "apiproxy_active_requests", &[]) == 0.0 {
            break;
        }
        assert!(
            gone.elapsed() < Duration::from_millis(1500),
            "request still active {:?} after the client left",
            gone.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_before_its_answer_is_not_retried_for() {
    let (a, b, gw) = failover_pair().await;
    a.script([Reply::Delay(Duration::from_secs(2), Box::new(Reply::Ok))]);
    let body = chat_body("lm").to_string();
    let sock = send_raw_chat(&gw, &body).await;
    until_it_reaches(&a).await;
    // The client hangs up while alpha is thinking. Nobody is left to answer: the request is not sent
    // again, to alpha or to beta (each try would be a completion paid for), and alpha's health does
    // not take the blame.
    drop(sock);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!((a.hits(), b.hits()), (1, 0));
    let text = gw.metrics().await;
    assert_eq!(metric(&text, "apiproxy_active_requests", &[]), 0.0);
    let chat = [("api", "openai_chat"), ("outcome", "client_closed")];
    assert_eq!(metric(&text, "apiproxy_requests_total", &chat), 1.0, "{text}");
    assert_eq!(
        metric(&text, "apiproxy_upstream_error_rate", &[("provider", "alpha")]),
        0.0
    );
    assert_eq!(metric(&text, "apiproxy_failovers_total", &[]), 0.0);
    assert_eq!(metric(&text, "apiproxy_retries_total", &[]), 0.0);
    // The one attempt is counted, as the client's doing.
    let cut = [("provider", "alpha"), ("outcome", "client_closed")];
    assert_eq!(metric(&text, "apiproxy_upstream_attempts_total", &cut), 1.0, "{text}");
    assert_eq!(metric(&text, "apiproxy_upstream_attempts_total", &[]), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_during_the_pause_before_a_retry_gets_no_more_attempts() {
    let (a, b, gw) = failover_pair().await;
    // A reset is retried on the same upstream after a 50-150 ms pause; the client hangs up in it.
    a.script([Reply::Reset, Reply::Ok]);
    let body = chat_body("lm").to_string();
    let sock = send_raw_chat(&gw, &body).await;
    until_it_reaches(&a).await;
    // The reset has been seen by now, and the pause (at least 50 ms) is not over.
    tokio::time::sleep(Duration::from_millis(35)).await;
    drop(sock);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!((a.hits(), b.hits()), (1, 0), "no attempt after the client left");
    let text = gw.metrics().await;
    assert_eq!(metric(&text, "apiproxy_active_requests", &[]), 0.0);
    let chat = [("api", "openai_chat"), ("outcome", "client_closed")];
    assert_eq!(metric(&text, "apiproxy_requests_total", &chat), 1.0, "{text}");
    // The one attempt ended with the reset, not with the client (it left between attempts).
    let reset = [("provider", "alpha"), ("outcome", "transport_error")];
    assert_eq!(metric(&text, "apiproxy_upstream_attempts_total", &reset), 1.0, "{text}");
    assert_eq!(metric(&text, "apiproxy_upstream_attempts_total", &[]), 1.0, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_a_silent_stream_ends_it_at_once() {
    use tokio::io::AsyncReadExt;
    let (a, gw) = keepalive_gateway(100, 20000).await;
    // Seven events 3 s apart: the client gets the first, then keep-alives while the upstream is silent.
    a.set_event_gap(Duration::from_secs(3));
    let body = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let mut sock = send_raw_chat(&gw, &body).await;
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&seen).contains(": ping") {
        assert!(
            Instant::now() < deadline,
            "no keep-alive: {}",
            String::from_utf8_lossy(&seen)
        );
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf))
            .await
            .expect("bytes within 5 s")
            .unwrap();
        assert!(n > 0, "the gateway closed the stream");
        seen.extend_from_slice(&buf[..n]);
    }
    let text = gw.metrics_now().await;
    assert_eq!(metric(&text, "apiproxy_open_streams", &[]), 1.0);

    // The client hangs up between keep-alives: the stream, and the upstream request behind it, end
    // at once instead of when the upstream's remaining 15 s of events are done.
    drop(sock);
    let gone = Instant::now();
    loop {
        let text = gw.metrics_now().await;
        if metric(&text, "apiproxy_active_requests", &[]) == 0.0 {
            assert_eq!(metric(&text, "apiproxy_open_streams", &[]), 0.0);
            let chat = [("api", "openai_chat"), ("outcome", "client_closed")];
            assert_eq!(metric(&text, "apiproxy_requests_total", &chat), 1.0, "{text}");
            // Leaving is the client's doing: the upstream that was streaming keeps a clean record.
            assert_eq!(
                metric(&text, "apiproxy_upstream_error_rate", &[("provider", "alpha")]),
                0.0
            );
            assert_eq!(
                metric(
                    &text,
                    "apiproxy_upstream_attempts_total",
                    &[("outcome", "transport_error")]
                ),
                0.0
            );
            // The stream's one attempt stays counted as the success it was.
            let ok = [("provider", "alpha"), ("outcome", "2xx")];
            assert_eq!(metric(&text, "apiproxy_upstream_attempts_total", &ok), 1.0, "{text}");
            break;
        }
        assert!(
            gone.elapsed() < Duration::from_millis(1500),
            "stream still open {:?} after the client left",
            gone.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_sent_in_pieces_is_routed_and_replayed_whole() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (a, b, gw) = failover_pair().await;
    a.script([Reply::status(503)]);
    // A chunked body in three pieces, some time apart: routing reads the pieces joined, and the
    // failover to beta sends the same whole body again.
    let content = "piece ".repeat(5000);
    let body = json!({"model": "lm", "messages": [{"role": "user", "content": content}]}).to_string();
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    for piece in body.as_bytes().chunks(body.len() / 3 + 1) {
        sock.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .await
            .unwrap();
        sock.write_all(piece).await.unwrap();
        sock.write_all(b"\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    sock.write_all(b"0\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), sock.read_to_string(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    let lower = answer.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 200"), "{answer}");
    assert!(lower.contains("x-apiproxy-provider: beta"), "{answer}");
    for mock in [&a, &b] {
        let sent = mock.last().expect("the upstream got the request");
        assert_eq!(sent.json()["messages"][0]["content"], content.as_str());
        assert_eq!(sent.json()["model"], "m");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_expects_100_continue_is_told_to_send_its_body() {
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    let answer = gw.post_expecting_continue(&chat_body("m").to_string()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("hello from alpha"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_ends_its_request() {
    use tokio::io::AsyncReadExt;
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!(
        "server: {{client_write_timeout_ms: 500}}\nproviders:\n{}",
        provider_yaml("alpha", &a, "")
    ))
    .await;
    // A long stream: about 19 MiB, far more than the sockets between here and the client hold.
    let big = "x".repeat(64 * 1024);
    let events: Vec<String> = (0..300)
        .map(|i| {
            format!("data: {{\"id\":\"c{i}\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{big}\"}},\"finish_reason\":null}}]}}\n\n")
        })
        .collect();
    a.script([Reply::Sse(events)]);
    let body = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let mut sock = send_raw_chat(&gw, &body.to_string()).await;
    let mut buf = vec![0u8; 4096];
    let n = sock.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // The client stops reading, its socket open. Once the write to it has waited 500 ms the
    // request ends: the stream is no longer counted open.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = gw.metrics_now().await;
        if metric(&text, "apiproxy_open_streams", &[]) == 0.0 && metric(&text, "apiproxy_active_requests", &[]) == 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the stalled client still holds its request");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(sock);
}

/// Sends a chat request with `body` on a raw socket (so a test can hang up whenever it likes) and
/// returns the socket.
async fn send_raw_chat(gw: &Gateway, body: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    sock
}

/// A gateway that sends stream keep-alives after `keepalive_ms` of silence, in front of one mock
/// whose streams may be silent for `idle_ms`.
async fn keepalive_gateway(keepalive_ms: u64, idle_ms: u64) -> (Mock, Gateway) {
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!(
        "server: {{stream_keepalive_ms: {keepalive_ms}}}\nproviders:\n{}",
        provider_yaml("alpha", &a, &format!(", timeouts: {{idle_ms: {idle_ms}}}"))
    ))
    .await;
    (a, gw)
}

/// Waits until `mock` has received a request.
async fn until_it_reaches(mock: &Mock) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while mock.hits() == 0 {
        assert!(Instant::now() < deadline, "the request never reached the upstream");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What the provider says of its account and site stays with the gateway: organisation, project,
/// rate limits of the operator's key, cookies, CORS, HTTP/3 hints.
#[tokio::test(flavor = "multi_thread")]
async fn provider_account_headers_never_reach_the_client() {
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    let body = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#;
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         openai-organization: operator-org\r\nopenai-project: proj_secret\r\n\
         anthropic-organization-id: 0000-org\r\nx-ratelimit-remaining-requests: 4999\r\n\
         anthropic-ratelimit-tokens-remaining: 10\r\nset-cookie: __cf_bm=abc; path=/\r\n\
         alt-svc: h3=\":443\"\r\ncf-ray: 123-AMS\r\naccess-control-allow-origin: *\r\n\
         keep-alive: timeout=5\r\nopenai-processing-ms: 12\r\n\r\n",
        body.len()
    );
    // The same for an OpenAI client (passed through) and an Anthropic client (translated).
    for path in ["/v1/chat/completions", "/v1/messages"] {
        a.script([Reply::Raw(format!("{head}{body}"))]);
        let req = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
        let r = gw.post(path, req, &[]).await;
        assert_eq!(r.status(), 200, "{path}");
        let names: Vec<&str> = r.headers().keys().map(|k| k.as_str()).collect();
        for leaked in [
            "openai-organization",
            "openai-project",
            "anthropic-organization-id",
            "x-ratelimit-remaining-requests",
            "anthropic-ratelimit-tokens-remaining",
            "set-cookie",
            "alt-svc",
            "cf-ray",
            "access-control-allow-origin",
            "keep-alive",
        ] {
            assert!(!names.contains(&leaked), "{path}: {leaked} in {names:?}");
        }
        assert!(
            names.contains(&"x-request-id") && names.contains(&"content-type"),
            "{names:?}"
        );
    }
}

/// An upstream's `103 Early Hints` before its answer is no answer: a translated call still gets
/// the answer that follows, not a 502.
#[tokio::test(flavor = "multi_thread")]
async fn early_hints_from_the_upstream_are_not_the_answer() {
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    let body = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"after the hints"},"finish_reason":"stop"}]}"#;
    a.script([Reply::Raw(format!(
        "HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n\
         HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ))]);
    let req = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let r = gw.post("/v1/messages", req, &[]).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["content"][0]["text"], "after the hints", "{v}");
}

/// A client waiting for `100 Continue` that is refused before its body is told at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_awaiting_continue_is_refused_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer wrong-key-123456\r\n\
                content-type: application/json\r\nexpect: 100-continue\r\ncontent-length: 5000\r\n\r\n";
    sock.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut answer))
        .await
        .expect("answered and closed")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "took {:?}",
        started.elapsed()
    );
}

/// A client refused before its large body was read (a bad key, a body over the limit) gets its
/// answer, not a reset: the rest of its body is read and dropped for a while after the answer, as
/// closing a socket with unread bytes resets it and can take the answer with it.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_client_still_sending_its_body_gets_the_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!(
        "server: {{max_body_bytes: 1048576}}\nproviders:\n{}",
        provider_yaml("alpha", &a, "")
    ))
    .await;
    for (key, len, want) in [
        ("wrong-key-123456", 900_000, "HTTP/1.1 401"),
        (CLIENT_KEY, 4_000_000, "HTTP/1.1 413"),
    ] {
        let sock = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
        let (mut rd, mut wr) = sock.into_split();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\
             content-type: application/json\r\ncontent-length: {len}\r\n\r\n"
        );
        // The client sends its whole body, as an SDK does, then reads the answer.
        let writer = tokio::spawn(async move {
            wr.write_all(head.as_bytes()).await.unwrap();
            let piece = vec![b' '; 16 * 1024];
            let mut sent = 0;
            while sent < len {
                let n = piece.len().min(len - sent);
                if wr.write_all(&piece[..n]).await.is_err() {
                    return false;
                }
                sent += n;
            }
            true
        });
        let wrote_all = writer.await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut answer))
            .await
            .expect("the answer ends");
        let text = String::from_utf8_lossy(&answer);
        assert!(read.is_ok() && text.starts_with(want), "{read:?} {text}");
        assert!(wrote_all, "the body was refused mid-way: {text}");
    }
}

/// Browsers: with `server.cors_origins`, a page of an allowed origin gets its preflight answered
/// without a key and can read every answer (success, stream, error); other origins get no CORS
/// headers (the browser refuses), and without the setting nothing changes.
#[tokio::test(flavor = "multi_thread")]
async fn allowed_web_origins_can_call_the_proxy_from_a_browser() {
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!(
        "server: {{cors_origins: [\"https://app.example.com\"]}}\nproviders:\n{}",
        provider_yaml("alpha", &a, "")
    ))
    .await;
    let preflight = |origin: &'static str| {
        gw.client
            .request(reqwest::Method::OPTIONS, gw.url("/v1/chat/completions"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type, x-stainless-os",
            )
            .send()
    };
    let r = preflight("https://app.example.com").await.unwrap();
    assert_eq!(r.status(), 204);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert!(h["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    assert_eq!(
        h["access-control-allow-headers"],
        "authorization, content-type, x-stainless-os"
    );
    assert_eq!(h["vary"], "origin");
    let r = preflight("https://evil.example.net").await.unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers().get("access-control-allow-origin").is_none());

    let from_page = |body: serde_json::Value, key: &'static str| {
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .header("origin", "https://app.example.com")
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    for (body, key, status) in [
        (chat_body("m"), CLIENT_KEY, 200),
        (
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
            CLIENT_KEY,
            200,
        ),
        (chat_body("m"), "wrong-key-123456", 401),
    ] {
        let r = from_page(body, key).await.unwrap();
        assert_eq!(r.status(), status);
        assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example.com");
        assert!(r.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-request-id"));
        r.bytes().await.unwrap();
    }
    let text = gw.metrics().await;
    assert_eq!(
        metric(&text, "apiproxy_requests_total", &[]),
        3.0,
        "preflights are not counted: {text}"
    );

    // Without the setting: no preflight answer, no CORS headers.
    let plain = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    let r = plain
        .client
        .request(reqwest::Method::OPTIONS, plain.url("/v1/chat/completions"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

/// Bodies are read as JSON: a compressed one is refused in the client's format (415), and one
/// labelled otherwise (`curl -d` says form data) reaches the upstream labelled as the JSON it is.
#[tokio::test(flavor = "multi_thread")]
async fn compressed_bodies_are_refused_and_json_goes_upstream_as_json() {
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    let send = |path: &'static str, headers: &[(&'static str, &'static str)]| {
        let mut r = gw
            .client
            .post(gw.url(path))
            .bearer_auth(CLIENT_KEY)
            .body(chat_body("m").to_string());
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send()
    };
    let r = send(
        "/v1/chat/completions",
        &[("content-encoding", "gzip"), ("content-type", "application/json")],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 415);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unsupported_content_encoding", "{v}");
    let r = send("/v1/messages", &[("content-encoding", "br")]).await.unwrap();
    assert_eq!(r.status(), 415);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "Anthropic's shape: {v}");
    assert_eq!(a.hits(), 0);

    let r = send(
        "/v1/chat/completions",
        &[("content-type", "application/x-www-form-urlencoded")],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(a.last().unwrap().header("content-type"), Some("application/json"));
}

/// HTTP/1.1 lets a client send its next requests before the first answer (RFC 9112 §9.3.2). Each
/// is answered in order on the same connection: the bytes of the next request arriving while the
/// first is with a slow upstream neither end the first nor get lost, and a refused request between
/// them leaves the rest served.
#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_are_answered_in_order() {
    use tokio::io::AsyncWriteExt;
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    a.script([Reply::Delay(Duration::from_millis(300), Box::new(Reply::Ok))]);
    let body = chat_body("m").to_string();
    let chat = |key: &str| {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    // The first request alone, then the rest while its upstream is still thinking.
    sock.write_all(chat(CLIENT_KEY).as_bytes()).await.unwrap();
    until_it_reaches(&a).await;
    let rest = format!(
        "{}{}GET /health HTTP/1.1\r\nhost: x\r\n\r\n{}",
        chat("wrong-key-123"),
        chat(CLIENT_KEY),
        chat(CLIENT_KEY).replace("HTTP/1.1\r\n", "HTTP/1.1\r\nconnection: close\r\n")
    );
    sock.write_all(rest.as_bytes()).await.unwrap();
    let answers = read_to_close(&mut sock, Duration::from_secs(10)).await;
    let statuses: Vec<&str> = answers
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &answers[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "401", "200", "200", "200"], "{answers}");
    assert_eq!(answers.matches("hello from alpha").count(), 3, "{answers}");
    assert_eq!(a.hits(), 3);
}

/// A body whose chunked framing is broken is the client's malformed request (a 400 in its format,
/// counted as a client error), not a client that went away.
#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_chunked_body_is_a_bad_request() {
    use tokio::io::AsyncWriteExt;
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    read_until(&mut sock, &mut seen, "}", Duration::from_secs(5)).await;
    let answer = String::from_utf8_lossy(&seen).to_string();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("malformed"), "{answer}");
    // Where the broken body ends is unknown: nothing after it is read as a next request.
    let rest = read_to_close(&mut sock, Duration::from_secs(5)).await;
    assert!(!rest.contains("HTTP/1.1"), "{rest}");
    assert_eq!(a.hits(), 0);
    let text = gw.metrics().await;
    assert_eq!(
        metric(&text, "apiproxy_requests_total", &[("outcome", "client_closed")]),
        0.0,
        "{text}"
    );
    assert_eq!(metric(&text, "apiproxy_client_errors_total", &[]), 1.0, "{text}");
}

/// An error the gateway writes after its upstreams failed (a refused connection, a reset, an
/// error status) ends that request only: the client's keep-alive connection carries its next one.
#[tokio::test(flavor = "multi_thread")]
async fn an_error_after_failed_upstreams_keeps_the_client_connection() {
    use tokio::io::AsyncWriteExt;
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    a.set_default(Reply::Reset);
    let body = chat_body("m").to_string();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    read_until(&mut sock, &mut seen, "}}", Duration::from_secs(10)).await;
    let first = String::from_utf8_lossy(&seen).into_owned();
    let head = first.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 50"), "{first}");
    assert!(!head.contains("connection: close"), "{first}");
    a.set_default(Reply::Ok);
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    read_until(&mut sock, &mut seen, "hello from alpha", Duration::from_secs(10)).await;
    let second = String::from_utf8_lossy(&seen);
    assert!(
        second.starts_with("HTTP/1.1 200"),
        "the second request on the connection: {second}"
    );
}

/// An upstream that answers the first request of each connection (keeping it alive) and closes the
/// connection `after` the second request came, without a byte of answer. Counts the answers.
/// An upstream that answers one request a connection and closes it when the next request comes on
/// it (after `after`); it counts the requests that came on a used connection (the gateway's
/// pooled one).
async fn one_answer_a_connection(after: Duration) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let on_pooled = std::sync::Arc::new(AtomicUsize::new(0));
    let reused = on_pooled.clone();
    let answered = std::sync::Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (seen, reused) = (answered.clone(), reused.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                if common::mock::read_request(&mut sock, &mut buf).await.is_none() {
                    return;
                }
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let _ = sock.write_all(numbered_answer(n).as_bytes()).await;
                if common::mock::read_request(&mut sock, &mut Vec::new()).await.is_some() {
                    reused.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(after).await;
                }
            });
        }
    });
    (format!("http://{addr}"), on_pooled)
}

/// A pooled upstream connection that the upstream closes as the next request reaches it (its
/// keep-alive ran out at that moment) is no attempt: the request goes again on a new connection,
/// even where `max_attempts` allows one attempt, and the upstream is not blamed.
#[tokio::test(flavor = "multi_thread")]
async fn a_pooled_connection_closed_under_a_request_is_tried_again_at_no_cost() {
    let (url, on_pooled) = one_answer_a_connection(Duration::ZERO).await;
    let yaml = format!(
        "server: {{max_attempts: 1}}\nproviders:\n{}",
        provider_yaml_api("closer", &url, "openai", ", models: [m]")
    );
    let gw = Gateway::start(&yaml).await;
    for i in 0..3 {
        expect_numbered_answer(&gw, i).await;
    }
    // The second and third requests went first on the pooled connection, which closed under them.
    assert_eq!(
        on_pooled.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the pooled connection was used"
    );
    let metrics = gw.metrics().await;
    let attempts = metric(&metrics, "apiproxy_upstream_attempts_total", &[("provider", "closer")]);
    assert_eq!(attempts, 3.0, "one attempt a request: {metrics}");
    assert_eq!(metric(&metrics, "apiproxy_retries_total", &[]), 0.0, "{metrics}");
}

/// A pooled connection that breaks a while after the request went out is no stale socket: the
/// upstream may have done the work. It is an attempt that failed, judged as a reset (one more try
/// on the same upstream), not sent again for free.
#[tokio::test(flavor = "multi_thread")]
async fn a_pooled_connection_that_breaks_late_is_a_failed_attempt() {
    let (url, _) = one_answer_a_connection(Duration::from_millis(800)).await;
    let yaml = format!(
        "server: {{max_attempts: 1}}\nproviders:\n{}",
        provider_yaml_api("closer", &url, "openai", ", models: [m]")
    );
    let gw = Gateway::start(&yaml).await;
    let resp = gw.chat(chat_body("m")).await;
    assert_eq!(resp.status(), 200);
    let resp = gw.chat(chat_body("m")).await;
    assert_eq!(resp.status(), 502, "one attempt allowed, and it failed");
    let metrics = gw.metrics().await;
    let attempts = metric(&metrics, "apiproxy_upstream_attempts_total", &[("provider", "closer")]);
    assert_eq!(attempts, 2.0, "{metrics}");
}

/// What a browser or a WebSocket client adds never reaches the provider: an `Origin` (Anthropic
/// answers it 401, which would bench the provider's keys), a `Referer`, an upgrade.
#[tokio::test(flavor = "multi_thread")]
async fn browser_and_upgrade_headers_stay_with_the_gateway() {
    let a = Mock::start_style("anth", &["claude-x"], Style::Anthropic).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml_styled("anth", &a, ""))).await;
    let headers = [
        ("origin", "https://app.example.com"),
        ("referer", "https://app.example.com/chat"),
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    ];
    let r = gw.post("/v1/chat/completions", chat_body("claude-x"), &headers).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let sent = a.last().unwrap();
    for (name, _) in headers {
        assert!(
            sent.header(name).is_none(),
            "{name} reached the provider: {:?}",
            sent.headers
        );
    }
}

/// A Gemini client's key in `?key=` is found whatever else the request carries: an empty
/// `x-api-key` hides nothing, and a key with URL-reserved characters arrives percent-encoded.
#[tokio::test(flavor = "multi_thread")]
async fn a_query_key_is_found_beside_an_empty_header_and_percent_decoded() {
    const ODD_KEY: &str = "odd+key/with=reserved-0123456789";
    let a = Mock::start_style("gm", &["gemini-x"], Style::Gemini).await;
    let gw = Gateway::start(&format!(
        "  - {{name: odd, key: \"{ODD_KEY}\"}}\nproviders:\n{}",
        provider_yaml_styled("gm", &a, "")
    ))
    .await;
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    let encoded = "odd%2Bkey%2Fwith%3Dreserved-0123456789";
    for (key, header) in [(CLIENT_KEY, Some("")), (encoded, None)] {
        let mut req = gw
            .client
            .post(gw.url(&format!("/v1beta/models/gemini-x:generateContent?key={key}")))
            .json(&body);
        if let Some(v) = header {
            req = req.header("x-api-key", v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200, "{key}: {}", r.text().await.unwrap());
    }
}

/// A session id with characters a path must encode (a space, a slash) is fetched with its id
/// percent-encoded, as any client puts it in a URL.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_context_is_fetched_by_its_percent_encoded_id() {
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    let r = gw
        .post(
            "/v1/chat/completions",
            chat_body("m"),
            &[("x-session-id", "my session/1")],
        )
        .await;
    assert_eq!(r.status(), 200);
    let mut v = Value::Null;
    until("the context is written", Duration::from_secs(2), async || {
        let r = gw
            .client
            .get(gw.url("/context/my%20session%2F1"))
            .bearer_auth(CLIENT_KEY)
            .send()
            .await
            .unwrap();
        v = r.json().await.unwrap_or(Value::Null);
        v["entries"].as_array().is_some_and(|e| !e.is_empty())
    })
    .await;
    assert_eq!(v["session_id"], "my session/1", "{v}");
}

/// A configuration change that leaves the providers as they were (a new client key) does not send
/// discovery to every provider's model list again; a new provider is listed at once.
#[tokio::test(flavor = "multi_thread")]
async fn only_provider_changes_send_discovery_out_again() {
    let a = Mock::start("alpha", &["gpt-a"]).await;
    let b = Mock::start("beta", &["gpt-b"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    let listings = |m: &Mock| {
        m.all_requests()
            .iter()
            .filter(|r| r.path_only().ends_with("/models"))
            .count()
    };
    let before = listings(&a);
    assert!(before >= 1, "listed at start");
    let me = gw.admin().await;
    let r = gw
        .admin_req(reqwest::Method::POST, &format!("/users/{}/api-keys", me.user_id))
        .await
        .json(&json!({"name": "another"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let minted: Value = r.json().await.unwrap();
    let key = minted["key"].as_str().unwrap().to_string();
    // The snapshot with the new key is in place (the proxy takes it) before anything is judged.
    until("the new key accepted", Duration::from_secs(5), async || {
        gw.client
            .get(gw.url("/v1/models"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(listings(&a), before, "a new client key lists no provider's models");
    let r = gw
        .admin_req(reqwest::Method::POST, "/providers")
        .await
        .json(&json!({"id": "beta", "base_url": b.url(), "api_keys": [{"key": "sk-beta-secret-key"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    until("beta listed", Duration::from_secs(3), async || listings(&b) >= 1).await;
}

/// Gemini lists 50 models a page and Anthropic 20 unless asked for more: every page is read, so
/// a model past the first is routed zero-config and listed.
#[tokio::test(flavor = "multi_thread")]
async fn model_lists_are_read_to_their_last_page() {
    let models = ["m-1", "m-2", "m-3", "m-4", "m-5"];
    let g = Mock::start_style("gem", &models, Style::Gemini).await;
    let an = Mock::start_style("ant", &["c-1", "c-2", "c-3", "c-4", "c-5"], Style::Anthropic).await;
    for m in [&g, &an] {
        m.set_page_cap(2);
    }
    let gw = Gateway::start(&format!(
        "providers:\n{}{}",
        provider_yaml_styled("gem", &g, ""),
        provider_yaml_styled("ant", &an, "")
    ))
    .await;
    for (model, provider) in [("m-5", "gem"), ("c-5", "ant"), ("m-3", "gem")] {
        let r = gw.chat(chat_body(model)).await;
        assert_eq!(r.status(), 200, "{model}: {}", r.text().await.unwrap());
        assert_eq!(r.headers()["x-apiproxy-provider"], provider);
    }
    let listed: Value = gw
        .client
        .get(gw.url("/v1/models"))
        .bearer_auth(CLIENT_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    for id in ["m-1", "m-5", "c-1", "c-5"] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    let gemini_pages = g.all_requests().iter().filter(|r| r.method == "GET").count();
    assert!(gemini_pages >= 3, "five models two a page: {gemini_pages} pages read");
}

/// The model list is asked for with each header once, the provider's own last, as the proxy sends
/// them: a provider that sets `anthropic-version` itself must not send two (Anthropic refuses).
#[tokio::test(flavor = "multi_thread")]
async fn the_model_list_is_asked_for_with_each_header_once() {
    let an = Mock::start_style("ant", &["c-1"], Style::Anthropic).await;
    let gw = Gateway::start(&format!(
        "providers:\n{}",
        provider_yaml_styled("ant", &an, ", headers: {anthropic-version: \"2023-06-01\"}")
    ))
    .await;
    let r = gw.chat(chat_body("c-1")).await;
    assert_eq!(r.status(), 200, "listed and routed: {}", r.text().await.unwrap());
    let listing = an
        .all_requests()
        .into_iter()
        .find(|r| r.method == "GET")
        .expect("the model list was asked for");
    for name in ["anthropic-version", "x-api-key"] {
        let n = listing
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .count();
        assert_eq!(n, 1, "{name}: {:?}", listing.headers);
    }
}

/// Hop-by-hop headers stay with the connection they came on: the client's `Connection` and the
/// names it nominates, `Keep-Alive`, `TE`, `Proxy-Authorization`… never reach the upstream; other
/// headers do, once each.
#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_headers_stay_with_the_client_s_connection() {
    use tokio::io::AsyncWriteExt;
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml("alpha", &a, ""))).await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let send = |extra: &str| {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\n\
             content-type: application/json\r\n{extra}content-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let hop = "connection: keep-alive, x-private-hop\r\nx-private-hop: 1\r\nkeep-alive: timeout=5\r\n\
               te: trailers\r\nproxy-authorization: Basic dXNlcjpwYXNz\r\nx-custom-end: kept\r\n";
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    sock.write_all(send(hop).as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    read_until(&mut sock, &mut seen, "hello from alpha", Duration::from_secs(10)).await;
    let sent = a.last().unwrap();
    for name in ["connection", "x-private-hop", "keep-alive", "te", "proxy-authorization"] {
        assert!(
            sent.header(name).is_none(),
            "{name} reached the upstream: {:?}",
            sent.headers
        );
    }
    assert_eq!(sent.header("x-custom-end"), Some("kept"), "{:?}", sent.headers);
    // `TE` alone (no `Connection` to nominate it) goes too.
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    sock.write_all(send("te: trailers\r\n").as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    read_until(&mut sock, &mut seen, "hello from alpha", Duration::from_secs(10)).await;
    assert!(a.last().unwrap().header("te").is_none());
    // A request with none of them keeps its own headers.
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    sock.write_all(send("x-custom-end: plain\r\n").as_bytes())
        .await
        .unwrap();
    let mut seen = Vec::new();
    read_until(&mut sock, &mut seen, "hello from alpha", Duration::from_secs(10)).await;
    assert_eq!(a.last().unwrap().header("x-custom-end"), Some("plain"));
}

/// `MASK_AS_BROWSER` sends upstream a browser's User-Agent (or the one given), and the Origin and
/// Referer given; without it, none of them.
#[tokio::test(flavor = "multi_thread")]
async fn masked_requests_reach_the_upstream_as_a_browser_s() {
    let a = Mock::start("alpha", &["m"]).await;
    let yaml = format!("providers:\n{}", provider_yaml("alpha", &a, ""));
    let gw = Gateway::start_with_env(
        &yaml,
        &[
            ("MASK_AS_BROWSER", "true"),
            ("MASK_ORIGIN", "https://app.example.com"),
            ("MASK_REFERER", "https://app.example.com/chat"),
        ],
    )
    .await;
    assert_eq!(gw.chat(chat_body("m")).await.status(), 200);
    let sent = a.last().unwrap();
    assert!(
        sent.header("user-agent")
            .is_some_and(|ua| ua.starts_with("Mozilla/5.0")),
        "{:?}",
        sent.headers
    );
    assert_eq!(sent.header("origin"), Some("https://app.example.com"));
    assert_eq!(sent.header("referer"), Some("https://app.example.com/chat"));
    let gw = Gateway::start_with_env(&yaml, &[("MASK_AS_BROWSER", "true"), ("MASK_USER_AGENT", "Acme/1.0")]).await;
    assert_eq!(gw.chat(chat_body("m")).await.status(), 200);
    assert_eq!(a.last().unwrap().header("user-agent"), Some("Acme/1.0"));
    let gw = Gateway::start(&yaml).await;
    assert_eq!(gw.chat(chat_body("m")).await.status(), 200);
    let sent = a.last().unwrap();
    assert!(
        sent.header("origin").is_none() && sent.header("referer").is_none(),
        "{:?}",
        sent.headers
    );
}

/// A `base_url` with a path puts it before every path (OpenRouter's `/api`), the model list's too;
/// a `paths` override replaces the path whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_base_url_s_path_and_a_path_override_are_where_requests_go() {
    let a = Mock::start("alpha", &["m-a"]).await;
    let b = Mock::start("beta", &["m-b"]).await;
    let gw = Gateway::start(&format!(
        "providers:\n  - {{id: alpha, base_url: \"{}/openrouter/api\", api_keys: [\"sk-alpha-secret-key\"]}}\n{}",
        a.url(),
        provider_yaml("beta", &b, ", models: [m-b], paths: {chat: /custom/chat}")
    ))
    .await;
    let r = gw.chat(chat_body("m-a")).await;
    assert_eq!(
        r.status(),
        200,
        "listed from the prefixed path: {}",
        r.text().await.unwrap()
    );
    assert_eq!(a.last().unwrap().path_only(), "/openrouter/api/v1/chat/completions");
    assert!(
        a.all_requests()
            .iter()
            .any(|r| r.method == "GET" && r.path_only() == "/openrouter/api/v1/models"),
        "the model list asked at the prefixed path"
    );
    assert_eq!(gw.chat(chat_body("m-b")).await.status(), 200);
    assert_eq!(b.last().unwrap().path_only(), "/custom/chat");
}
