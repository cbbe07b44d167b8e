//! Format translation through the gateway, over raw HTTP: errors in the client's format with mapped
//! statuses, untranslatable requests refused, auto-detected bodies, usage chunks asked for and
//! stripped, cut translated streams, and token accounting in the metrics.

mod common;
mod formats_support;

use common::mock::Style;
use common::*;
use serde_json::{json, Value};

async fn setup() -> (Mock, Mock, Gateway) {
    let oa = Mock::start_style("oa", &["gpt-x"], Style::OpenAiChat).await;
    let an = Mock::start_style("an", &["claude-x"], Style::Anthropic).await;
    let yaml = format!(
        "providers:\n{}{}",
        provider_yaml_styled("oa", &oa, ", models: [gpt-x]"),
        provider_yaml_styled("an", &an, ", models: [claude-x]")
    );
    (oa, an, Gateway::start(&yaml).await)
}

/// A Gemini client's `streamGenerateContent` call for `model`, with `query` (`?alt=sse` or none).
async fn gemini_stream_call(gw: &Gateway, model: &str, query: &str) -> reqwest::Response {
    gw.client
        .post(gw.url(&format!("/v1beta/models/{model}:streamGenerateContent{query}")))
        .header("x-goog-api-key", CLIENT_KEY)
        .json(&json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .unwrap()
}

/// A Gemini client's stream from `model`: SSE (`?alt=sse`), or without it (`array`) the JSON
/// array; checked to come as 200 with the content type asked for, and read.
async fn gemini_client_stream(gw: &Gateway, model: &str, array: bool) -> formats_support::Final {
    let r = gemini_stream_call(gw, model, if array { "" } else { "?alt=sse" }).await;
    assert_eq!(r.status(), 200);
    let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
    let want = if array { "application/json" } else { "text/event-stream" };
    assert!(content_type.starts_with(want), "{content_type}");
    formats_support::gemini(&r.bytes().await.unwrap(), array)
}

/// A Gemini-style mock serving `gem-x`, and a gateway in front of it.
async fn gemini_setup() -> (Mock, Gateway) {
    let g = Mock::start_style("gm", &["gem-x"], Style::Gemini).await;
    let gw = Gateway::start(&format!(
        "providers:\n{}",
        provider_yaml_styled("gm", &g, ", models: [gem-x]")
    ))
    .await;
    (g, gw)
}

/// A 200 answer's content type and body.
async fn stream_bytes(r: reqwest::Response) -> (String, Vec<u8>) {
    assert_eq!(r.status(), 200);
    let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
    (content_type, r.bytes().await.unwrap().to_vec())
}

fn anthropic_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 100, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

/// An Anthropic client's error body carries the request's id as `x-request-id` says it, whether
/// the gateway refused the request or rendered another format's upstream error, so the id a
/// client logs finds the gateway's log line.
#[tokio::test(flavor = "multi_thread")]
async fn anthropic_error_bodies_carry_the_request_s_id() {
    let (oa, _an, gw) = setup().await;
    // The gateway's own refusal, and an OpenAI upstream's 400 re-rendered (not retried: the
    // upstream's error itself, in Anthropic's shape).
    oa.script([Reply::status_body(
        400,
        r#"{"error":{"message":"bad field","type":"invalid_request_error","param":"temperature","code":null}}"#,
    )]);
    for (model, status) in [("no-such-model", 404), ("gpt-x", 400)] {
        let r = gw.post("/v1/messages", anthropic_body(model, false), &[]).await;
        assert_eq!(r.status(), status);
        let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["request_id"], id, "{model}: {v}");
    }
    // An id the client sent is the one it gets back.
    let r = gw
        .post(
            "/v1/messages",
            anthropic_body("no-such-model", false),
            &[("x-request-id", "client-chosen-1")],
        )
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["request_id"], "client-chosen-1", "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_errors_reach_the_client_in_its_own_format() {
    let (oa, an, gw) = setup().await;
    // Anthropic 400 to an OpenAI client: OpenAI shape, provider's message kept, not retried.
    an.script([Reply::status_body(400, r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 300000 tokens > 200000 maximum"}}"#)]);
    let r = gw.chat(chat_body("claude-x")).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-gateway-upstream-status"], "400");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("prompt is too long"),
        "{v}"
    );
    assert_eq!(an.hits(), 1);

    // OpenAI 400 to an Anthropic client: Anthropic shape.
    oa.script([Reply::status_body(400, r#"{"error":{"message":"maximum context length exceeded","type":"invalid_request_error","param":null,"code":"context_length_exceeded"}}"#)]);
    let r = gw.post("/v1/messages", anthropic_body("gpt-x", false), &[]).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maximum context length"),
        "{v}"
    );
}

/// An upstream error with an empty body, or a compressed one, still reaches a client of another
/// format as a readable error in that format (its status kept), never an empty or mislabelled body.
#[tokio::test(flavor = "multi_thread")]
async fn empty_and_compressed_upstream_errors_reach_the_client_readable() {
    let (oa, _an, gw) = setup().await;
    oa.script([Reply::Raw("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".into())]);
    let r = gw.post("/v1/messages", anthropic_body("gpt-x", false), &[]).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");

    // A body the gateway cannot read (compressed, though it asked for none).
    let compressed = "\u{7}\u{3}compressed-bytes";
    oa.script([Reply::Raw(format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-encoding: br\r\n\
         content-length: {}\r\n\r\n{compressed}",
        compressed.len()
    ))]);
    let r = gw.post("/v1/messages", anthropic_body("gpt-x", false), &[]).await;
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("content-encoding").is_none(), "{:?}", r.headers());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn overload_statuses_are_mapped_per_client() {
    let (oa, an, gw) = setup().await;
    // Anthropic 529 everywhere: an OpenAI client gets 503 (the last-resort error), never a 529.
    an.set_default(Reply::overloaded());
    let r = gw.chat(chat_body("claude-x")).await;
    assert_eq!(r.status(), 503, "{}", r.text().await.unwrap());
    assert!(an.hits() >= 1);

    // An OpenAI upstream at 503 gives an Anthropic client 529 overloaded_error.
    oa.set_default(Reply::status_retry_after(503, 3));
    let r = gw.post("/v1/messages", anthropic_body("gpt-x", false), &[]).await;
    assert_eq!(r.status(), 529);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "overloaded_error", "{v}");

    // A Gemini client gets Gemini's error shape.
    let r = gw
        .post(
            "/v1beta/models/gpt-x:generateContent",
            json!({"contents": [{"parts": [{"text": "hi"}]}]}),
            &[],
        )
        .await;
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["status"], "UNAVAILABLE", "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn untranslatable_requests_are_refused_with_a_reason() {
    let (_oa, an, gw) = setup().await;
    let r = gw
        .chat(json!({"model": "claude-x", "n": 2, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unsupported_for_upstream", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("`n` > 1"), "{v}");
    assert_eq!(an.hits(), 0, "nothing was sent");
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_style_bodies_on_chat_completions_are_detected() {
    let (oa, an, gw) = setup().await;
    let body = json!({"model": "gpt-x", "max_tokens": 50, "system": "be brief",
                      "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]});
    let r = gw.chat(body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion", "answered in OpenAI format: {v}");
    let sent = oa.last().unwrap().json();
    assert_eq!(
        sent["messages"][0]["role"], "system",
        "the system prompt became a system message: {sent}"
    );
    assert_eq!(an.hits(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_streams_report_usage_without_surprising_the_client() {
    let (oa, _an, gw) = setup().await;
    let r = gw
        .chat(json!({"model": "gpt-x", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    let text = r.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(
        !text.contains("\"prompt_tokens\""),
        "the client did not ask for usage: {text}"
    );
    assert_eq!(
        oa.last().unwrap().json()["stream_options"]["include_usage"],
        true,
        "the gateway asked for it"
    );

    let r = gw
        .chat(json!({"model": "gpt-x", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    let text = r.text().await.unwrap();
    assert!(
        text.contains("\"prompt_tokens\":25"),
        "the client asked for usage: {text}"
    );

    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let metrics = gw.metrics().await;
    let input = metric(
        &metrics,
        "apiproxy_tokens_total",
        &[("provider", "oa"), ("kind", "input")],
    );
    assert_eq!(input, 50.0, "both streams counted 25 input tokens: {metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn translated_streams_that_break_end_in_the_clients_error_event() {
    let (oa, an, gw) = setup().await;
    // OpenAI upstream cut mid-stream, Anthropic client: `event: error`, no message_stop.
    oa.script([Reply::StreamCut { after: 2 }]);
    let r = gw.post("/v1/messages", anthropic_body("gpt-x", true), &[]).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("event: message_start"), "{text}");
    assert!(text.contains("event: error\ndata: {"), "{text}");
    assert!(!text.contains("message_stop"), "{text}");

    // Anthropic upstream reset mid-answer, OpenAI client: an error chunk, no [DONE]. (Reset
    // before the answer's first delta, it is asked again: nothing has reached the client.)
    an.script([Reply::StreamAbort { after: 5 }]);
    let r = gw
        .chat(json!({"model": "claude-x", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .await;
    let data = sse_data(r).await;
    assert!(!data.iter().any(|d| d == "[DONE]"), "{data:?}");
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap_or(Value::Null);
    assert_eq!(last["error"]["code"], "stream_interrupted", "{data:?}");

    // Gemini client, Anthropic upstream cut after its first delta: Gemini's in-stream error object.
    an.script([Reply::StreamCut { after: 5 }]);
    let r = gw
        .post(
            "/v1beta/models/claude-x:streamGenerateContent?alt=sse",
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}]}),
            &[],
        )
        .await;
    let text = r.text().await.unwrap();
    assert!(text.contains("data: {\"error\""), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn translated_answers_keep_the_connection_alive() {
    let (_oa, _an, gw) = setup().await;
    for body in [
        chat_body("claude-x"),
        json!({"model": "claude-x", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    ] {
        let r = gw.chat(body).await;
        assert_eq!(r.status(), 200);
        let framed = r.headers().get("transfer-encoding").is_some_and(|v| v == "chunked")
            || r.headers().contains_key("content-length");
        assert!(
            framed,
            "a body without framing closes the connection: {:?}",
            r.headers()
        );
        assert!(
            r.headers().get("connection").is_none_or(|v| v != "close"),
            "{:?}",
            r.headers()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_clients_are_translated_for_chat_only_upstreams() {
    let chat_only = Mock::start_style("co", &["gpt-c"], Style::ChatOnly).await;
    let native = Mock::start_style("na", &["gpt-n"], Style::OpenAiChat).await;
    let yaml = format!(
        "providers:\n{}{}",
        provider_yaml_styled("co", &chat_only, ", models: [gpt-c], responses_api: false"),
        provider_yaml_styled("na", &native, ", models: [gpt-n]")
    );
    let gw = Gateway::start(&yaml).await;
    let r = gw
        .post("/v1/responses", json!({"model": "gpt-c", "input": "hi"}), &[])
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "response", "{v}");
    assert_eq!(
        chat_only.last().unwrap().path,
        "/v1/chat/completions",
        "translated to Chat"
    );
    let r = gw
        .post("/v1/responses", json!({"model": "gpt-n", "input": "hi"}), &[])
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(native.last().unwrap().path, "/v1/responses", "native where supported");
}

#[tokio::test(flavor = "multi_thread")]
async fn gemini_streams_without_alt_sse_are_a_json_array() {
    let (_oa, an, gw) = setup().await;
    let r = gemini_stream_call(&gw, "gpt-x", "").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let v: Value = r.json().await.expect("a whole JSON array");
    let chunks = v.as_array().expect("array");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["candidates"][0]["content"]["parts"][0]["text"].as_str())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 tok3 tok4 ", "{v}");
    assert_eq!(chunks.last().unwrap()["candidates"][0]["finishReason"], "STOP", "{v}");

    // `?key=` authenticates Gemini clients too.
    let r = gw.gemini_with_query_key("gpt-x").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["text"], "hello from oa",
        "{v}"
    );

    // `provider/model` routing from a Gemini client: the slash as a path separator or escaped.
    for model in ["an/claude-x", "an%2Fclaude-x"] {
        let before = an.hits();
        let r = gw
            .post(
                &format!("/v1beta/models/{model}:generateContent"),
                json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
                &[],
            )
            .await;
        assert_eq!(r.status(), 200, "{model}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["candidates"][0]["content"]["parts"][0]["text"].is_string(),
            "{model}: {v}"
        );
        assert_eq!(an.hits(), before + 1, "{model} went to the provider it names");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tool_names_an_upstream_would_refuse_are_renamed_and_given_back() {
    let (oa, _an, gw) = setup().await;
    // Valid for Anthropic clients, refused by OpenAI: a dot, and more than 64 characters.
    let dotted = "filesystem.read_file";
    let long = format!("mcp__{}", "server_with_a_long_name__".repeat(3));
    let body = |stream: bool| {
        json!({"model": "gpt-x", "max_tokens": 100, "stream": stream,
            "tools": [{"name": dotted, "input_schema": {"type": "object"}},
                      {"name": long, "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "read it"},
                         {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": dotted, "input": {}}]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]}]})
    };
    assert_eq!(gw.post("/v1/messages", body(false), &[]).await.status(), 200);
    let sent = oa.last().unwrap().json();
    let names: Vec<String> = sent["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap().to_string())
        .collect();
    for n in &names {
        assert!(
            n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "{n}"
        );
    }
    let (up_dotted, up_long) = (names[0].clone(), names[1].clone());
    // The conversation's earlier call goes up under the same name.
    assert_eq!(
        sent["messages"][1]["tool_calls"][0]["function"]["name"],
        up_dotted.as_str(),
        "{sent}"
    );

    // The upstream calls both tools by the names it was given; the client sees its own names.
    let calls = json!([
        {"id": "call_a", "type": "function", "function": {"name": up_dotted, "arguments": "{}"}},
        {"id": "call_b", "type": "function", "function": {"name": up_long, "arguments": "{}"}}]);
    oa.script([Reply::status_body(
        200,
        json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-x",
            "choices": [{"index": 0, "finish_reason": "tool_calls",
                         "message": {"role": "assistant", "content": null, "tool_calls": calls}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}})
        .to_string(),
    )]);
    let v: Value = gw.post("/v1/messages", body(false), &[]).await.json().await.unwrap();
    let used: Vec<&str> = v["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "tool_use")
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(used, [dotted, long.as_str()], "{v}");

    // Streamed the same way.
    oa.script([Reply::Sse(vec![
        chat_sse_chunk(
            json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_a", "type": "function",
            "function": {"name": up_dotted, "arguments": ""}}]}),
            Value::Null,
        ),
        chat_sse_chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
            Value::Null,
        ),
        chat_sse_chunk(
            json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
            "function": {"name": up_long, "arguments": "{}"}}]}),
            Value::Null,
        ),
        chat_sse_chunk(json!({}), json!("tool_calls")),
        "data: [DONE]\n\n".to_string(),
    ])]);
    let text = gw.post("/v1/messages", body(true), &[]).await.text().await.unwrap();
    let starts: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|e| e["type"] == "content_block_start" && e["content_block"]["type"] == "tool_use")
        .map(|e| e["content_block"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(starts, [dotted.to_string(), long.clone()], "{text}");
}

/// Serves `body` as `content_type` to every request; returns its base URL and how many it served.
async fn file_server(
    content_type: &'static str,
    body: &'static [u8],
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    file_server_with(content_type, "", body).await
}

/// `file_server` with extra header lines (each ending in CRLF).
async fn file_server_with(
    content_type: &'static str,
    extra: &'static str,
    body: &'static [u8],
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while common::mock::read_request(&mut sock, &mut buf).await.is_some() {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\n{extra}content-length: {}\r\n\r\n",
                        body.len()
                    );
                    if sock.write_all(head.as_bytes()).await.is_err() || sock.write_all(body).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), served)
}

fn image_chat(model: &str, url: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": url}}
    ]}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gemini_body_on_chat_completions_reaches_gemini_without_openai_fields() {
    let gm = Mock::start_style("gm", &["gemini-x"], Style::Gemini).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml_styled("gm", &gm, ""))).await;
    for stream in [true, false] {
        let body = json!({"model": "gemini-x", "stream": stream,
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
        let r = gw.chat(body).await;
        assert_eq!(r.status(), 200, "stream={stream}");
        let _ = r.text().await;
        // Gemini refuses unknown fields: model and stream go in the path only.
        let sent = gm.last().unwrap().json();
        assert!(sent.get("stream").is_none() && sent.get("model").is_none(), "{sent}");
        assert_eq!(sent["contents"][0]["parts"][0]["text"], "hi");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_name_that_is_no_url_segment_never_reaches_a_gemini_upstream() {
    let gm = Mock::start_style("gm", &["gemini-x"], Style::Gemini).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml_styled("gm", &gm, ""))).await;
    // The model goes in a Gemini URL: a space, or a `:method?` of the client's choosing, would
    // change what is called (with the gateway's key). It names no model: 404, nothing sent.
    for model in ["gm/x y", "gm/gemini-x:countTokens?", "gm/../files", "gm/模型"] {
        let r = gw
            .chat(json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .await;
        assert_eq!(r.status(), 404, "{model}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "model_not_found", "{model}: {v}");
    }
    assert_eq!(gm.hits(), 0);
    // A name that fits is sent, the `models/` prefix included.
    for model in ["gm/gemini-x", "gm/models/gemini-2.0-flash-001"] {
        let r = gw
            .chat(json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .await;
        assert_eq!(r.status(), 200, "{model}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn image_urls_are_fetched_and_sent_inline_to_gemini_upstreams() {
    use base64::Engine;
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n fake image bytes";
    let (files, served) = file_server("image/png", PNG).await;
    let (html, _) = file_server("text/html", b"<html></html>").await;
    let gm = Mock::start_style("gm", &["gemini-x"], Style::Gemini).await;
    let yaml = |extra: &str| {
        format!(
            "{extra}providers:\n{}",
            provider_yaml_styled("gm", &gm, ", models: [gemini-x]")
        )
    };
    let gw = Gateway::start(&yaml("server: {fetch_private_media: true}\n")).await;

    let url = format!("{files}/cat.png");
    let r = gw.chat(image_chat("gemini-x", &url)).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 1);
    let sent = gm.last().unwrap().json();
    let parts = &sent["contents"][0]["parts"];
    let inline = parts
        .as_array()
        .unwrap()
        .iter()
        .find_map(|p| p.get("inlineData"))
        .unwrap_or_else(|| panic!("no inline image in {sent}"));
    assert_eq!(inline["mimeType"], "image/png");
    assert_eq!(inline["data"], base64::engine::general_purpose::STANDARD.encode(PNG));
    assert!(!sent.to_string().contains(&url), "the URL itself is not sent: {sent}");

    // The next turn of the conversation sends the same image again: it is not downloaded again.
    let r = gw.chat(image_chat("gemini-x", &url)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 1, "fetched once");
    assert_eq!(gm.last().unwrap().json(), sent, "the same inline image");
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "apiproxy_media_fetches_total", &[("result", "fetched")]),
        1.0
    );
    assert_eq!(metric(&m, "apiproxy_media_fetches_total", &[("result", "reused")]), 1.0);
    // Unless its server says it must not be kept.
    let (private, private_served) = file_server_with("image/png", "cache-control: private\r\n", PNG).await;
    for _ in 0..2 {
        let r = gw.chat(image_chat("gemini-x", &format!("{private}/me.png"))).await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(private_served.load(std::sync::atomic::Ordering::SeqCst), 2);

    // Not an image: the client gets a 400 naming the URL, and the upstream is not called.
    let hits = gm.hits();
    let r = gw.chat(image_chat("gemini-x", &format!("{html}/page"))).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("not an image"), "{v}");
    assert_eq!(gm.hits(), hits);

    // Too large: refused with the limit named.
    let big: &'static [u8] = Box::leak(vec![0u8; 15 * 1024 * 1024].into_boxed_slice());
    let (huge, _) = file_server("image/png", big).await;
    let r = gw.chat(image_chat("gemini-x", &format!("{huge}/huge.png"))).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("14 MiB"), "{v}");
    assert_eq!(gm.hits(), hits);

    // By default a URL may not make the gateway reach a non-public address.
    let strict = Gateway::start(&yaml("")).await;
    let r = strict.chat(image_chat("gemini-x", &url)).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("not public"), "{v}");
    assert_eq!(
        served.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "nothing was fetched"
    );
    let local_name = url.replace("127.0.0.1", "localhost");
    let r = strict.chat(image_chat("gemini-x", &local_name)).await;
    assert_eq!(r.status(), 400, "a name that resolves to loopback is refused too");
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn reasoning_from_another_vendor_replayed_to_anthropic_loses_only_the_unsigned_blocks() {
    let (oa, an, gw) = setup().await;
    // An Anthropic client streams from an OpenAI-compatible upstream that reasons
    // (`reasoning_content`): the thinking it sees has no Claude signature.
    oa.script([Reply::Thinking]);
    let text = gw
        .post("/v1/messages", anthropic_body("gpt-x", true), &[])
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("\"thinking_delta\""), "{text}");
    assert!(!text.contains("signature_delta"), "{text}");
    // The next turn replays that block (as Claude Code does) and goes to Claude.
    let unsigned = json!({"type": "thinking", "thinking": "Let me think.", "signature": ""});
    let signed = json!({"type": "thinking", "thinking": "Mine.", "signature": "EqQBsig"});
    let body = json!({"model": "claude-x", "max_tokens": 100, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [unsigned, {"type": "text", "text": "Let me check."}]},
        {"role": "user", "content": "and?"},
        {"role": "assistant", "content": [signed, {"type": "text", "text": "ok"}]},
        {"role": "user", "content": "go on"}]});
    let r = gw.post("/v1/messages", body.clone(), &[]).await;
    assert_eq!(r.status(), 200);
    let sent = an.last().unwrap().json();
    assert_eq!(
        sent["messages"][1]["content"],
        json!([{"type": "text", "text": "Let me check."}])
    );
    assert_eq!(
        sent["messages"][3], body["messages"][3],
        "Claude's own signed thinking goes byte-exact"
    );
    assert_eq!(sent["messages"].as_array().unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn gemini_s_retry_delay_in_the_body_is_honoured() {
    // Gemini says when to come back in the body (RetryInfo), not in a Retry-After header.
    let (g, gw) = gemini_setup().await;
    g.script([Reply::status_body(
        429,
        json!({"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]}})
        .to_string(),
    )]);
    let r = gw.chat(chat_body("gem-x")).await;
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((6..=7).contains(&wait), "Retry-After {wait}");
    // The provider rests that long: the next request is not sent to it.
    assert_eq!(gw.chat(chat_body("gem-x")).await.status(), 429);
    assert_eq!(g.hits(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_answer_to_a_stream_request_reaches_the_client_as_its_stream() {
    let (oa, an, gw) = setup().await;
    let tools = |f: &formats_support::Final| -> Vec<(String, Value)> {
        f.tools
            .iter()
            .map(|(_, name, args)| (name.clone(), args.clone()))
            .collect()
    };
    let expected_tools = vec![
        ("get_weather".to_string(), json!({"city": "Paris"})),
        ("get_time".to_string(), json!({"tz": "CET"})),
    ];

    // Same format: an OpenAI server that ignores `stream: true` (the SDK would read nothing from JSON).
    oa.script([Reply::Whole(Box::new(Reply::ToolCalls))]);
    let r = gw
        .chat(
            json!({"model": "gpt-x", "stream": true, "stream_options": {"include_usage": true},
                     "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    let (content_type, bytes) = stream_bytes(r).await;
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    let f = formats_support::openai_chat(&bytes, true);
    assert_eq!(f.text, "Let me check.", "{f:?}");
    assert_eq!(tools(&f), expected_tools, "{f:?}");
    assert_eq!(f.finish.as_deref(), Some("tool_calls"), "{f:?}");
    assert!(f.usage.is_some() && f.clean_end && f.error.is_none(), "{f:?}");

    // Translated: an Anthropic client of an OpenAI upstream, a Responses client of an Anthropic one.
    oa.script([Reply::Whole(Box::new(Reply::Ok))]);
    let r = gw.post("/v1/messages", anthropic_body("gpt-x", true), &[]).await;
    let (content_type, bytes) = stream_bytes(r).await;
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    let f = formats_support::anthropic(&bytes);
    assert_eq!(f.text, "hello from oa", "{f:?}");
    assert_eq!(f.finish.as_deref(), Some("stop"), "{f:?}");
    assert!(f.clean_end && f.error.is_none(), "{f:?}");

    an.script([Reply::Whole(Box::new(Reply::ToolCalls))]);
    let r = gw
        .post(
            "/v1/responses",
            json!({"model": "claude-x", "input": "hi", "stream": true}),
            &[],
        )
        .await;
    let (_, bytes) = stream_bytes(r).await;
    let f = formats_support::responses(&bytes);
    assert_eq!(f.text, "Let me check.", "{f:?}");
    assert_eq!(tools(&f), expected_tools, "{f:?}");
    assert!(f.clean_end && f.error.is_none(), "{f:?}");

    // Gemini clients, as SSE and as the JSON array of a stream without `alt=sse`.
    for array in [false, true] {
        an.script([Reply::Whole(Box::new(Reply::Ok))]);
        let f = gemini_client_stream(&gw, "claude-x", array).await;
        assert_eq!(f.text, "hello from an", "array={array} {f:?}");
        assert_eq!(f.finish.as_deref(), Some("stop"), "{f:?}");
    }

    // A stream the server labels `text/plain` is still a stream: passed on as it came, not buffered.
    let events = [
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"plain\"},\"finish_reason\":\"stop\"}]}\n\n",
        "data: [DONE]\n\n",
    ];
    oa.script([Reply::SsePlain(events.iter().map(|e| e.to_string()).collect())]);
    let r = gw
        .chat(json!({"model": "gpt-x", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    let (content_type, bytes) = stream_bytes(r).await;
    assert_eq!(String::from_utf8_lossy(&bytes), events.concat());
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    // And translated as it comes for a client of another format, not read as a whole answer.
    oa.script([Reply::SsePlain(events.iter().map(|e| e.to_string()).collect())]);
    let r = gw.post("/v1/messages", anthropic_body("gpt-x", true), &[]).await;
    let (content_type, bytes) = stream_bytes(r).await;
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    let f = formats_support::anthropic(&bytes);
    assert_eq!(f.text, "plain", "{f:?}");
    assert!(f.clean_end && f.error.is_none(), "{f:?}");

    // A whole answer that is not one: the client's stream ends with its error event, not a clean end.
    oa.script([Reply::Whole(Box::new(Reply::status_body(200, "not json")))]);
    let r = gw
        .chat(json!({"model": "gpt-x", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    let (_, bytes) = stream_bytes(r).await;
    let f = formats_support::openai_chat(&bytes, false);
    assert!(!f.clean_end && f.error.is_some(), "{f:?}");
    let m = gw.metrics().await;
    assert_eq!(metric(&m, "apiproxy_open_streams", &[]), 0.0, "every stream was closed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gemini_upstream_s_json_answer_to_a_stream_request_reaches_the_client_as_its_stream() {
    // Gemini-compatible servers that ignore `alt=sse` answer a stream as a JSON array; some ignore
    // the stream altogether and answer with the whole object. Either is read as the stream it is.
    let (g, gw) = gemini_setup().await;
    let openai_stream = || json!({"model": "gem-x", "stream": true, "messages": [{"role": "user", "content": "hi"}]});

    // Each reply with the text it carries: the stream's five tokens, or the whole answer's text.
    let replies = [
        (Reply::Ok, "tok0 tok1 tok2 tok3 tok4 "),
        (Reply::JsonArray(Box::new(Reply::Ok)), "tok0 tok1 tok2 tok3 tok4 "),
        (Reply::Whole(Box::new(Reply::Ok)), "hello from gm"),
    ];
    for (reply, text) in &replies {
        g.script([reply.clone()]);
        let (content_type, bytes) = stream_bytes(gw.chat(openai_stream()).await).await;
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        let f = formats_support::openai_chat(&bytes, false);
        assert_eq!(f.text, *text, "{f:?}");
        assert_eq!(f.finish.as_deref(), Some("stop"), "{f:?}");
        assert!(f.clean_end && f.error.is_none(), "{f:?}");

        g.script([reply.clone()]);
        let r = gw.post("/v1/messages", anthropic_body("gem-x", true), &[]).await;
        let (content_type, bytes) = stream_bytes(r).await;
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        let f = formats_support::anthropic(&bytes);
        assert_eq!(f.text, *text, "{f:?}");
        assert!(f.clean_end && f.error.is_none(), "{f:?}");
    }

    // A Gemini client of the same server: the SSE it asked for, or the JSON array.
    for array in [false, true] {
        for (reply, text) in &replies {
            g.script([reply.clone()]);
            let f = gemini_client_stream(&gw, "gem-x", array).await;
            assert_eq!(f.text, *text, "array={array} {f:?}");
            assert_eq!(f.finish.as_deref(), Some("stop"), "{f:?}");
            assert!(f.error.is_none(), "{f:?}");
        }
    }
    let m = gw.metrics().await;
    assert_eq!(metric(&m, "apiproxy_open_streams", &[]), 0.0, "every stream was closed");
    assert!(
        metric(&m, "apiproxy_tokens_total", &[("provider", "gm"), ("kind", "output")]) > 0.0,
        "usage was read from the answers"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_whose_last_event_lacks_its_blank_line_ends_cleanly() {
    let (oa, _an, gw) = setup().await;
    // `[DONE]` with one line end, then the body ends: a whole stream, not a cut one.
    let events = || {
        Reply::Sse(vec![
            chat_sse_chunk(json!({"role": "assistant", "content": "hi"}), Value::Null),
            chat_sse_chunk(json!({}), json!("stop")),
            "data: [DONE]\n".to_string(),
        ])
    };
    oa.script([events()]);
    let r = gw
        .chat(json!({"model": "gpt-x", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .await;
    let text = r.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text:?}");
    assert!(!text.contains("stream_interrupted"), "{text}");

    oa.script([events()]);
    let text = gw
        .post("/v1/messages", anthropic_body("gpt-x", true), &[])
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("event: message_stop"), "{text}");
    assert!(!text.contains("event: error"), "{text}");
}

/// One OpenAI Chat stream chunk as an SSE event.
fn chat_sse_chunk(delta: Value, finish: Value) -> String {
    format!(
        "data: {}\n\n",
        json!({"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    )
}

/// Gemini takes at most five stop sequences. Sending five of six would let an answer run past the
/// sixth unnoticed, so a Gemini upstream is skipped for such a request: the next tier answers, and
/// with none the client is told why, in its own format.
#[tokio::test(flavor = "multi_thread")]
async fn more_stop_sequences_than_gemini_takes_skip_the_gemini_upstream() {
    let g = Mock::start_style("gm", &["gem-x"], Style::Gemini).await;
    // (Claude, which the client's own format reaches untranslated, takes any number.)
    let oa = Mock::start_style("oa", &["gpt-x"], Style::Anthropic).await;
    let gw = Gateway::start(&format!(
        "providers:\n{}{}logical_models:\n  - id: both\n    upstreams:\n      - {{provider: gm, model: gem-x}}\n      - {{provider: oa, model: gpt-x, priority: 1}}\n",
        provider_yaml_styled("gm", &g, ", models: [gem-x]"),
        provider_yaml_styled("oa", &oa, ", models: [gpt-x]")
    ))
    .await;
    let body = |model: &str, stops: usize| {
        let stops: Vec<String> = (0..stops).map(|i| format!("STOP{i}")).collect();
        json!({"model": model, "max_tokens": 100, "stop_sequences": stops,
               "messages": [{"role": "user", "content": "hi"}]})
    };
    let send = |b: Value| {
        gw.client
            .post(gw.url("/v1/messages"))
            .header("x-api-key", CLIENT_KEY)
            .header("anthropic-version", "2023-06-01")
            .json(&b)
            .send()
    };
    let r = send(body("gem-x", 5)).await.unwrap();
    assert_eq!(r.status(), 200);
    let sent = g.last().unwrap().json();
    assert_eq!(
        sent["generationConfig"]["stopSequences"].as_array().unwrap().len(),
        5,
        "{sent}"
    );

    let r = send(body("gem-x", 6)).await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "Anthropic's shape: {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 5 stop sequences"),
        "{v}"
    );
    assert_eq!(g.hits(), 1, "nothing more was sent to Gemini");

    let r = send(body("both", 6)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!((g.hits(), oa.hits()), (1, 1));
    assert_eq!(oa.last().unwrap().json()["stop_sequences"].as_array().unwrap().len(), 6);
}

/// A Gemini client's conversation that carries a tool call another vendor made (a failover, a
/// routing change) reaches a Gemini upstream with the skip value Gemini 3 requires on the first
/// unsigned call of a model turn; a signed call keeps its own signature.
#[tokio::test(flavor = "multi_thread")]
async fn a_gemini_client_s_unsigned_tool_call_reaches_gemini_with_the_skip_value() {
    let (g, gw) = gemini_setup().await;
    let body = json!({"contents": [
        {"role": "user", "parts": [{"text": "weather?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"t": 18}}}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_time", "args": {}}, "thoughtSignature": "c2ln"}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_time", "response": {"t": "noon"}}}]}]});
    let r = gw
        .client
        .post(gw.url("/v1beta/models/gem-x:generateContent"))
        .header("x-goog-api-key", CLIENT_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sent = g.last().unwrap().json();
    assert_eq!(
        sent["contents"][1]["parts"][0]["thoughtSignature"], "skip_thought_signature_validator",
        "{sent}"
    );
    assert_eq!(sent["contents"][3]["parts"][0]["thoughtSignature"], "c2ln", "{sent}");
    assert_eq!(sent["contents"][1]["parts"][0]["functionCall"]["args"]["city"], "Paris");
}

/// An upstream error whose body breaks off half-way still reaches a client of another format as
/// that format's error, with the mapped status: rendered from what came, not an empty body.
#[tokio::test(flavor = "multi_thread")]
async fn an_error_body_that_breaks_off_still_reaches_the_client_as_its_error() {
    let (g, gw) = gemini_setup().await;
    g.script([Reply::Raw(
        "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n12\r\n{\"error\":{\"code\":4\r\n".into(),
    )]);
    let r = gw
        .chat(json!({"model": "gem-x", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(r.status(), 404);
    let text = r.text().await.unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    assert!(v["error"]["message"].is_string(), "{v}");
}

/// A Gemini stream sent as a JSON array streams on as it comes: its first element reaches the
/// client at once, not held back until enough bytes came to rule out an error object.
#[tokio::test(flavor = "multi_thread")]
async fn a_gemini_json_array_stream_is_not_held_back() {
    use futures_util::StreamExt;
    let (g, gw) = gemini_setup().await;
    g.set_event_gap(std::time::Duration::from_millis(2000));
    g.script([Reply::JsonArray(Box::new(Reply::Ok))]);
    let started = std::time::Instant::now();
    let r = gw
        .chat(json!({"model": "gem-x", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("tok0") {
        let Some(Ok(chunk)) = body.next().await else {
            panic!("ended before the first token")
        };
        seen.extend_from_slice(&chunk);
    }
    let first = started.elapsed();
    assert!(
        first < std::time::Duration::from_millis(1500),
        "first token after {first:?}"
    );
}

/// Token counts (Claude Code asks before its turns, to know when to compact): an Anthropic or Gemini
/// client's count is answered by an Anthropic or Gemini upstream, translated between the two, with
/// the upstream's own number; an OpenAI upstream cannot count and is passed by, and a model with
/// none that can is a 404 in the client's format (never a made-up count). A count binds no session
/// and adds nothing to its context, and is labelled apart in the metrics.
#[tokio::test(flavor = "multi_thread")]
async fn token_counts_are_answered_by_upstreams_that_count() {
    let oa = Mock::start_style("oa", &["gpt-x"], Style::OpenAiChat).await;
    let an = Mock::start_style("an", &["claude-x"], Style::Anthropic).await;
    let gm = Mock::start_style("gm", &["gem-x"], Style::Gemini).await;
    an.set_strict(true);
    let yaml = format!(
        "providers:\n{}{}{}logical_models:\n  - id: coder\n    upstreams:\n      - {{provider: oa, model: gpt-x}}\n      - {{provider: an, model: claude-x, priority: 1}}\n",
        provider_yaml_styled("oa", &oa, ", models: [gpt-x]"),
        provider_yaml_styled("an", &an, ", models: [claude-x]"),
        provider_yaml_styled("gm", &gm, ", models: [gem-x]")
    );
    let gw = Gateway::start(&yaml).await;
    // Seven words of prompt in either format: the mocks count words.
    let prompt = json!({"model": "claude-x", "system": "Be brief.",
        "messages": [{"role": "user", "content": "how long is this"}, {"role": "assistant", "content": "short"}]});
    let anthropic_count = |model: &str| {
        let mut body = prompt.clone();
        body["model"] = json!(model);
        gw.client
            .post(gw.url("/v1/messages/count_tokens?beta=true"))
            .header("x-api-key", CLIENT_KEY)
            .header("anthropic-version", "2023-06-01")
            .header("x-claude-code-session-id", "counting")
            .json(&body)
            .send()
    };
    for (model, mock) in [("claude-x", &an), ("gem-x", &gm)] {
        let r = anthropic_count(model).await.unwrap();
        assert_eq!(r.status(), 200, "{model}");
        let v: Value = r.json().await.unwrap();
        let seen = mock.last().unwrap();
        assert_eq!(v, json!({"input_tokens": 7}), "{model}");
        assert_eq!(
            common::mock::prompt_tokens(&seen.json()),
            7,
            "{model}: {:?}",
            seen.json()
        );
        match mock.style() {
            Style::Anthropic => {
                assert_eq!(seen.path, "/v1/messages/count_tokens");
                assert_eq!(seen.header("x-api-key"), Some(provider_key("an").as_str()));
            }
            _ => {
                assert_eq!(seen.path_only(), "/v1beta/models/gem-x:countTokens");
                assert_eq!(seen.json()["generateContentRequest"]["model"], "models/gem-x");
            }
        }
    }
    // A Gemini client's count, bare or wrapped, from either upstream.
    let gemini_prompt = json!({"contents": [{"role": "user", "parts": [{"text": "how long is this"}]}]});
    let wrapped = json!({"generateContentRequest": {"model": "models/whatever", "contents": gemini_prompt["contents"],
        "systemInstruction": {"parts": [{"text": "Be brief."}]}, "generationConfig": {"maxOutputTokens": 9}}});
    for (model, body, want) in [
        ("gem-x", &gemini_prompt, 4),
        ("gem-x", &wrapped, 6),
        ("claude-x", &gemini_prompt, 4),
        ("claude-x", &wrapped, 6),
    ] {
        let r = gw
            .client
            .post(gw.url(&format!("/v1beta/models/{model}:countTokens")))
            .header("x-goog-api-key", CLIENT_KEY)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{model} {body}");
        let v: Value = r.json().await.unwrap();
        // A Gemini upstream's answer passes as it came (with its per-modality details).
        assert_eq!(v["totalTokens"], want, "{model} {body}: {v}");
    }
    assert_eq!(
        gm.last().unwrap().json()["generateContentRequest"]["model"],
        "models/gem-x",
        "the physical model, not the client's"
    );
    // A logical model whose first upstream cannot count: the next one does.
    let before = an.hits();
    let r = anthropic_count("coder").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"input_tokens": 7}));
    assert_eq!(an.hits(), before + 1);
    // None can: a 404 in the client's format, and the OpenAI upstream never asked.
    for r in [
        anthropic_count("gpt-x").await.unwrap(),
        gw.client
            .post(gw.url("/v1beta/models/gpt-x:countTokens"))
            .header("x-goog-api-key", CLIENT_KEY)
            .json(&gemini_prompt)
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(r.status(), 404);
        let v: Value = r.json().await.unwrap();
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("counts tokens"), "{v}");
        assert!(v["type"] == "error" || v["error"]["status"] == "NOT_FOUND", "{v}");
    }
    assert_eq!(oa.hits(), 0, "the OpenAI upstream was asked to count");
    // An upstream's error on a count reaches the client in its format; it judges the upstream for
    // nothing else (the count endpoint has its own limits): the model's next answer is served.
    an.script([Reply::status(429)]);
    let r = anthropic_count("claude-x").await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["type"], "rate_limit_error");
    let answer = json!({"model": "claude-x", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]});
    let r = gw
        .post(
            "/v1/messages",
            answer,
            &[
                ("anthropic-version", "2023-06-01"),
                ("x-claude-code-session-id", "counting"),
            ],
        )
        .await;
    assert_eq!(r.status(), 200, "a count's 429 cooled the upstream down for answers");
    // The session's context holds that answer alone: no count entered it.
    let mut entries = Vec::new();
    for _ in 0..50 {
        let r = gw
            .client
            .get(gw.url("/context/counting"))
            .header("authorization", format!("Bearer {CLIENT_KEY}"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            entries = r.json::<Value>().await.unwrap()["entries"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !entries.is_empty() {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(entries.len(), 1, "{entries:?}");
    // A count refused before routing (a wrong key) is counted as a count, not as an answer.
    let refused = |metrics: &str, api: &str| {
        metric(
            metrics,
            "apiproxy_requests_total",
            &[("api", api), ("outcome", "rejected")],
        )
    };
    let before = gw.metrics().await;
    let r = gw
        .client
        .post(gw.url("/v1/messages/count_tokens"))
        .header("x-api-key", "not-a-key")
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "authentication_error"
    );
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "apiproxy_requests_total",
            &[("api", "anthropic_count_tokens"), ("outcome", "ok")]
        ),
        3.0,
        "{metrics}"
    );
    for (api, more) in [("anthropic_count_tokens", 1.0), ("anthropic", 0.0)] {
        assert_eq!(refused(&metrics, api), refused(&before, api) + more, "{api}: {metrics}");
    }
    assert_eq!(
        metric(
            &metrics,
            "apiproxy_requests_total",
            &[("api", "gemini_count_tokens"), ("outcome", "ok")]
        ),
        4.0,
        "{metrics}"
    );
    // The one answer: the counts are no `anthropic` request and no usage.
    assert_eq!(
        metric(&metrics, "apiproxy_requests_total", &[("api", "anthropic")]),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "apiproxy_tokens_total", &[("kind", "input")]),
        common::mock::usage::PROMPT as f64,
        "a count is no usage: {metrics}"
    );
}

/// Embeddings in OpenAI's shape: passed to an OpenAI-compatible upstream with the model rewritten,
/// translated for Gemini's `batchEmbedContents` (floats, or the base64 OpenAI's SDKs ask for by
/// default); a model served only by Anthropic is a 404, and what Gemini cannot take a 400.
#[tokio::test(flavor = "multi_thread")]
async fn embeddings_reach_openai_and_gemini_upstreams() {
    use base64::Engine;
    let oa = Mock::start_style("oa", &["emb-x"], Style::OpenAiChat).await;
    let gm = Mock::start_style("gm", &["gem-emb"], Style::Gemini).await;
    let an = Mock::start_style("an", &["claude-x"], Style::Anthropic).await;
    let yaml = format!(
        "providers:\n{}{}{}logical_models:\n  - id: embedder\n    upstreams:\n      - {{provider: an, model: claude-x}}\n      - {{provider: oa, model: emb-x}}\n",
        provider_yaml_styled("oa", &oa, ", models: [emb-x]"),
        provider_yaml_styled("gm", &gm, ", models: [gem-emb]"),
        provider_yaml_styled("an", &an, ", models: [claude-x]")
    );
    let gw = Gateway::start(&yaml).await;
    // A URL in a text is text to embed (no media to fetch for Gemini).
    let texts = ["the quick fox", "see https://example.com/a"];
    let embed = |body: Value| gw.post("/v1/embeddings", body, &[]);
    // The vectors as the client reads them, floats or base64.
    let vectors = |v: &Value| -> Vec<Vec<f64>> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, d)| {
                assert_eq!(d["index"], i, "{v}");
                assert_eq!(d["object"], "embedding");
                match &d["embedding"] {
                    Value::String(b64) => base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .unwrap()
                        .chunks(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                        .collect(),
                    floats => floats.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect(),
                }
            })
            .collect()
    };
    let want: Vec<Vec<f64>> = texts.iter().map(|t| common::mock::mock_vector(t)).collect();

    // A logical model whose first upstream (Anthropic) has no embeddings: the OpenAI one serves it.
    let r = embed(json!({"model": "embedder", "input": texts})).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(vectors(&v), want);
    assert_eq!(v["usage"]["prompt_tokens"], 5, "the upstream's own usage: {v}");
    let seen = oa.last().unwrap();
    assert_eq!(seen.path, "/v1/embeddings");
    assert_eq!(seen.json()["model"], "emb-x");
    assert_eq!(an.hits(), 0, "Anthropic was asked for embeddings");

    // Gemini: floats, base64, and the dimensions asked for (a vector cut short is scaled back to
    // length 1, as OpenAI's always are).
    let unit: Vec<Vec<f64>> = want
        .iter()
        .map(|v| {
            let length = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter().map(|x| x / length).collect()
        })
        .collect();
    for encoding in ["float", "base64"] {
        let r = embed(json!({"model": "gem-emb", "input": texts, "encoding_format": encoding, "dimensions": 3})).await;
        assert_eq!(r.status(), 200, "{encoding}");
        let v: Value = r.json().await.unwrap();
        for (got, unit) in vectors(&v).iter().zip(&unit) {
            let off: f64 = got.iter().zip(unit).map(|(a, b)| (a - b).abs()).sum();
            assert!(off < 1e-6, "{encoding}: {got:?} against {unit:?}");
        }
        assert_eq!(v["object"], "list");
        assert_eq!(v["model"], "gem-emb");
        assert_eq!(v["data"][0]["embedding"].is_string(), encoding == "base64", "{v}");
        let seen = gm.last().unwrap();
        assert_eq!(seen.path_only(), "/v1beta/models/gem-emb:batchEmbedContents");
        let requests = seen.json()["requests"].as_array().unwrap().clone();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[1]["content"]["parts"][0]["text"], texts[1]);
        assert_eq!(requests[0]["outputDimensionality"], 3);
    }
    // One string is one input.
    let r = embed(json!({"model": "gem-emb", "input": "the quick fox"})).await;
    assert_eq!(vectors(&r.json::<Value>().await.unwrap()), want[..1].to_vec());

    // Token ids mean nothing to Gemini: refused with the reason, nothing sent.
    let before = gm.hits();
    let r = embed(json!({"model": "gem-emb", "input": [[1, 2, 3]]})).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("token-id"), "{v}");
    assert_eq!(gm.hits(), before);

    // Anthropic alone: no upstream of the model embeds.
    let r = embed(json!({"model": "claude-x", "input": "hi"})).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "embeddings_unsupported", "{v}");
    assert_eq!(an.hits(), 0);

    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "apiproxy_requests_total",
            &[("api", "openai_embeddings"), ("outcome", "ok")]
        ),
        4.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "apiproxy_tokens_total",
            &[("kind", "input"), ("provider", "oa")]
        ),
        5.0,
        "the OpenAI upstream's usage counted: {metrics}"
    );
}

/// A tool loop of Claude Code's, with the thinking DeepSeek's reasoner streamed earlier, reaches
/// DeepSeek's own API with that reasoning back as `reasoning_content` (its thinking mode refuses a
/// tool call's follow-up without it); another host, even of a DeepSeek model (Groq refuses the
/// field), gets none.
#[tokio::test(flavor = "multi_thread")]
async fn reasoning_goes_back_to_the_models_that_require_it() {
    let ds = Mock::start_style("ds", &["deepseek-reasoner", "gpt-x"], Style::OpenAiChat).await;
    let port = ds.url().rsplit(':').next().unwrap().to_string();
    let gw = Gateway::start(&format!(
        "server: {{resolve: {{api.deepseek.com: [127.0.0.1]}}}}\nproviders:\n{}{}",
        provider_yaml_api(
            "ds",
            &format!("http://api.deepseek.com:{port}"),
            "openai",
            ", models: [deepseek-reasoner], responses_api: false"
        ),
        provider_yaml_styled("other", &ds, ", models: [gpt-x, deepseek-r1-distill]")
    ))
    .await;
    let turn = |model: &str| {
        json!({"model": model, "max_tokens": 200, "messages": [
            {"role": "user", "content": "What is in the directory?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "I should list the files.", "signature": ""},
                {"type": "tool_use", "id": "call_1", "name": "ls", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "a.txt"}]}],
         "tools": [{"name": "ls", "description": "list files", "input_schema": {"type": "object", "properties": {}}}]})
    };
    let r = gw
        .post(
            "/v1/messages",
            turn("deepseek-reasoner"),
            &[("anthropic-version", "2023-06-01")],
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let sent = ds.last().unwrap().json();
    assert_eq!(
        sent["messages"][1]["reasoning_content"], "I should list the files.",
        "{sent}"
    );
    for other in ["gpt-x", "deepseek-r1-distill"] {
        let r = gw
            .post("/v1/messages", turn(other), &[("anthropic-version", "2023-06-01")])
            .await;
        assert_eq!(r.status(), 200);
        let sent = ds.last().unwrap().json();
        assert!(sent["messages"][1].get("reasoning_content").is_none(), "{sent}");
    }

    // Codex: the reasoning the gateway wrote for it as a summary goes back the same way (Codex
    // sends such an item back without its id).
    let codex = json!({"model": "deepseek-reasoner", "input": [
        {"role": "user", "content": "What is in the directory?"},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "List them."}], "encrypted_content": null},
        {"type": "function_call", "call_id": "call_1", "name": "ls", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"}],
        "tools": [{"type": "function", "name": "ls", "parameters": {"type": "object", "properties": {}}}]});
    let r = gw.post("/v1/responses", codex, &[]).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let sent = ds.last().unwrap().json();
    assert_eq!(sent["messages"][1]["reasoning_content"], "List them.", "{sent}");
    // A tool call whose reasoning never reached the client (thinking off): the field, empty.
    let mut bare = turn("deepseek-reasoner");
    bare["messages"][1]["content"].as_array_mut().unwrap().remove(0);
    let r = gw
        .post("/v1/messages", bare, &[("anthropic-version", "2023-06-01")])
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    assert_eq!(ds.last().unwrap().json()["messages"][1]["reasoning_content"], "");
}

/// Codex's remote compaction (`/responses/compact`) reaches a native Responses upstream as sent
/// (model rewritten) and comes back as it answered; a model with no such upstream is a 404 in
/// OpenAI's shape, which Codex reports as the compaction's failure rather than as an overload.
#[tokio::test(flavor = "multi_thread")]
async fn codex_compaction_reaches_native_responses_upstreams() {
    let oa = Mock::start_style("oa", &["gpt-x"], Style::OpenAiChat).await;
    let chat_only = Mock::start_style("co", &["gpt-c"], Style::ChatOnly).await;
    let gw = Gateway::start(&format!(
        "providers:\n{}{}logical_models:\n  - id: coder\n    upstreams:\n      - {{provider: co, model: gpt-c}}\n      - {{provider: oa, model: gpt-x, priority: 1}}\n",
        provider_yaml_styled("oa", &oa, ", models: [gpt-x]"),
        provider_yaml_styled("co", &chat_only, ", models: [gpt-c], responses_api: false")
    ))
    .await;
    // With a reasoning item the gateway wrote from Claude's thinking: OpenAI would refuse it.
    let body = json!({"model": "coder", "input": [
        {"role": "user", "content": "hi"},
        {"type": "reasoning", "id": "rs_apx_0002", "summary": [], "encrypted_content": "anthropic-thinking:EqQB"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hello"}]}],
        "instructions": "You are Codex."});
    let r = gw.post("/v1/responses/compact", body.clone(), &[]).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["output"][0]["type"], "compaction", "{v}");
    assert_eq!(
        v["output"][0]["encrypted_content"], "compacted 2 items of gpt-x",
        "the other vendor's reasoning item left out"
    );
    let seen = oa.last().unwrap();
    assert_eq!(seen.path, "/v1/responses/compact");
    assert_eq!(seen.json()["instructions"], "You are Codex.");
    assert_eq!(chat_only.hits(), 0, "a Chat-only upstream was asked to compact");
    // A model whose only upstream speaks Chat: no compaction here.
    let mut only_chat = body;
    only_chat["model"] = json!("gpt-c");
    let r = gw.post("/v1/responses/compact", only_chat, &[]).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "compact_unsupported", "{v}");
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "apiproxy_requests_total",
            &[("api", "openai_responses_compact"), ("outcome", "ok")]
        ),
        1.0,
        "{metrics}"
    );
}

/// Reasoning the gateway wrote for a Responses client from another vendor's (DeepSeek's plain
/// reasoning, Claude's redacted thinking) carries a mark in `encrypted_content`, so that when Codex
/// sends it back without its id, a native OpenAI upstream still never gets it (it would refuse the
/// request); OpenAI's own reasoning goes back as it came.
#[tokio::test(flavor = "multi_thread")]
async fn reasoning_the_gateway_wrote_never_reaches_openai_without_its_id() {
    let ds = Mock::start_style("ds", &["r1"], Style::OpenAiChat).await;
    let oa = Mock::start_style("oa", &["gpt-x"], Style::Responses).await;
    let gw = Gateway::start(&format!(
        "providers:\n{}{}",
        provider_yaml_styled("ds", &ds, ", models: [r1], responses_api: false"),
        provider_yaml_styled("oa", &oa, ", models: [gpt-x]")
    ))
    .await;
    ds.script([Reply::Thinking]);
    let r = gw
        .post(
            "/v1/responses",
            json!({"model": "r1", "input": "What is the weather?"}),
            &[],
        )
        .await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    let output = answer["output"].as_array().unwrap();
    let reasoning = output
        .iter()
        .find(|i| i["type"] == "reasoning")
        .expect("a reasoning item");
    assert_eq!(reasoning["encrypted_content"], "apiproxy-unsigned:", "{reasoning}");
    // Codex's next turn: the answer's items without the reasoning items' ids, a redacted thinking
    // of Claude's from earlier, OpenAI's own reasoning, and the tool results.
    let mut input = vec![json!({"role": "user", "content": "What is the weather?"})];
    for item in output {
        let mut item = item.clone();
        if item["type"] == "reasoning" {
            item.as_object_mut().unwrap().remove("id");
        }
        input.push(item);
    }
    input.push(json!({"type": "reasoning", "summary": [], "encrypted_content": "anthropic-redacted:EmwKAhgB"}));
    input.push(json!({"type": "reasoning", "summary": [], "encrypted_content": "gAAAA-openai-own"}));
    for call in output.iter().filter(|i| i["type"] == "function_call") {
        input.push(json!({"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}));
    }
    let r = gw
        .post(
            "/v1/responses",
            json!({"model": "gpt-x", "input": input, "store": false}),
            &[],
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let sent = oa.last().unwrap().json();
    let reasoning_sent: Vec<&Value> = sent["input"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "reasoning")
        .collect();
    assert_eq!(reasoning_sent.len(), 1, "{sent}");
    assert_eq!(reasoning_sent[0]["encrypted_content"], "gAAAA-openai-own");
}

/// A client key's token counts draw on a rate-limit bucket of their own: Claude Code's burst of
/// counts as it starts is limited like any request, but never starves the conversation.
#[tokio::test(flavor = "multi_thread")]
async fn token_counts_do_not_spend_the_conversation_s_rate_limit() {
    let an = Mock::start_style("an", &["claude-x"], Style::Anthropic).await;
    let gw = Gateway::start(&format!(
        "providers:\n{}",
        provider_yaml_styled("an", &an, ", models: [claude-x]")
    ))
    .await;
    let admin = gw.admin().await;
    let r = gw
        .client
        .post(gw.admin_url(&format!("/users/{}/api-keys", admin.user_id)))
        .bearer_auth(&admin.token)
        .json(&json!({"name": "claude-code", "rate_limit_rps": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let key = r.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_string();
    // The key is accepted within a second of being minted.
    let send = |path: &'static str| {
        let mut body = json!({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]});
        if path == "/v1/messages" {
            body["max_tokens"] = json!(5);
        }
        gw.client
            .post(gw.url(path))
            .header("x-api-key", key.as_str())
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
    };
    let mut first = 401;
    for _ in 0..50 {
        first = send("/v1/messages/count_tokens").await.unwrap().status().as_u16();
        if first != 401 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(first, 200);
    let r = send("/v1/messages/count_tokens").await.unwrap();
    assert_eq!(r.status(), 429, "counts are limited too");
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["type"], "rate_limit_error");
    assert_eq!(
        send("/v1/messages").await.unwrap().status(),
        200,
        "the counts starved the conversation"
    );
    assert_eq!(send("/v1/messages").await.unwrap().status(), 429);
}

/// JSON mode through Anthropic: an OpenAI client that asked `json_object` and has tools of its
/// own (so the JSON tool is not forced) gets the tool's input alone, streamed or whole, though
/// Claude wrote text before it; and gets the words when Claude answered in words alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_json_mode_answer_through_anthropic_is_json_alone() {
    let (_oa, an, gw) = setup().await;
    let ev = |v: Value| format!("event: {}\ndata: {v}\n\n", v["type"].as_str().unwrap());
    let sse = |with_json: bool| {
        let mut events = vec![
            ev(
                json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                "model": "claude-x", "content": [], "usage": {"input_tokens": 5, "output_tokens": 1}}}),
            ),
            ev(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
            ev(
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Here it is:"}}),
            ),
            ev(json!({"type": "content_block_stop", "index": 0})),
        ];
        if with_json {
            events.extend([
                ev(
                    json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use",
                    "id": "toolu_1", "name": "json_tool_call", "input": {}}}),
                ),
                ev(json!({"type": "content_block_delta", "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": "{\"a\":1}"}})),
                ev(json!({"type": "content_block_stop", "index": 1})),
            ]);
        }
        let reason = if with_json { "tool_use" } else { "end_turn" };
        events.extend([
            ev(json!({"type": "message_delta", "delta": {"stop_reason": reason}, "usage": {"output_tokens": 9}})),
            ev(json!({"type": "message_stop"})),
        ]);
        events
    };
    let body = json!({"model": "claude-x", "stream": true, "response_format": {"type": "json_object"},
        "messages": [{"role": "user", "content": "json please"}],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]});
    for (with_json, want) in [(true, r#"{"a":1}"#), (false, "Here it is:")] {
        an.script([Reply::Sse(sse(with_json))]);
        let text = gw.chat(body.clone()).await.text().await.unwrap();
        let said: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
            .collect();
        assert_eq!(said, want, "{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_a_gemini_model_made_reaches_every_client_and_can_be_edited() {
    let gm = Mock::start_style("gm", &["gemini-image"], Style::Gemini).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml_styled("gm", &gm, ""))).await;
    let data = "iVBORw0KGgoAAAANSUhEUg==";
    let picture = json!({"inlineData": {"mimeType": "image/png", "data": data}});
    let whole = json!({"responseId": "r1", "modelVersion": "gemini-image", "candidates": [{"index": 0,
        "finishReason": "STOP", "content": {"role": "model", "parts": [{"text": "A cat:"}, picture]}}]});
    let sse = vec![
        format!(
            "data: {}\r\n\r\n",
            json!({"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": "A cat:"}]}}]})
        ),
        format!(
            "data: {}\r\n\r\n",
            json!({"candidates": [{"index": 0, "content": {"role": "model", "parts": [picture]}}]})
        ),
        format!(
            "data: {}\r\n\r\n",
            json!({"candidates": [{"index": 0, "finishReason": "STOP",
            "content": {"role": "model", "parts": [{"text": ""}]}}]})
        ),
    ];
    let url = format!("data:image/png;base64,{data}");

    // OpenAI Chat, whole: `message.images`.
    gm.script([Reply::status_body(200, whole.to_string())]);
    let ask = json!({"model": "gemini-image", "messages": [{"role": "user", "content": "a cat"}]});
    let v: Value = gw.chat(ask.clone()).await.json().await.unwrap();
    let message = &v["choices"][0]["message"];
    assert_eq!(message["content"], "A cat:", "{v}");
    assert_eq!(message["images"][0]["image_url"]["url"], url.as_str(), "{v}");

    // OpenAI Chat, streamed: `delta.images`.
    gm.script([Reply::Sse(sse.clone())]);
    let mut streamed = ask.clone();
    streamed["stream"] = true.into();
    let chunks = sse_data(gw.chat(streamed).await).await;
    let images: Vec<Value> = chunks
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"].get("images").cloned())
        .collect();
    assert_eq!(images.len(), 1, "{chunks:?}");
    assert_eq!(images[0][0]["image_url"]["url"], url.as_str());

    // Anthropic, streamed: an `image` block.
    gm.script([Reply::Sse(sse.clone())]);
    let r = gw
        .post(
            "/v1/messages",
            json!({"model": "gemini-image", "max_tokens": 100, "stream": true,
                "messages": [{"role": "user", "content": "a cat"}]}),
            &[],
        )
        .await;
    let body = r.text().await.unwrap();
    let block = formats_support::sse_events(body.as_bytes())
        .into_iter()
        .filter_map(|(_, d)| serde_json::from_str::<Value>(&d).ok())
        .find(|v| v["type"] == "content_block_start" && v["content_block"]["type"] == "image");
    assert_eq!(
        block.map(|v| v["content_block"]["source"]["data"].clone()),
        Some(json!(data)),
        "{body}"
    );

    // OpenAI Responses, whole: an `image_generation_call` item, which the client gives back to
    // edit the picture: the Gemini model gets it in its own turn.
    gm.script([Reply::status_body(200, whole.to_string())]);
    let v: Value = gw
        .post("/v1/responses", json!({"model": "gemini-image", "input": "a cat"}), &[])
        .await
        .json()
        .await
        .unwrap();
    let item = v["output"]
        .as_array()
        .and_then(|o| o.iter().find(|i| i["type"] == "image_generation_call"))
        .cloned()
        .unwrap_or_else(|| panic!("no image item: {v}"));
    assert_eq!(item["result"], data, "{v}");
    let r = gw
        .post(
            "/v1/responses",
            json!({"model": "gemini-image", "input": [{"role": "user", "content": "a cat"}, item,
                {"role": "user", "content": "make it blue"}]}),
            &[],
        )
        .await;
    assert_eq!(r.status(), 200);
    let sent = gm.last().unwrap().json();
    assert_eq!(sent["contents"][1]["role"], "model", "{sent}");
    assert_eq!(sent["contents"][1]["parts"][0], picture, "{sent}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_given_back_never_reaches_an_assistant_turn_of_claude_or_openai() {
    // `oa` is api.openai.com-like: it takes `/v1/responses` natively.
    let (oa, an, gw) = setup().await;
    let image =
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}});
    // An Anthropic client whose earlier turn was a Gemini image model's, now talking to Claude.
    let r = gw
        .post(
            "/v1/messages",
            json!({"model": "claude-x", "max_tokens": 100, "messages": [
                {"role": "user", "content": [{"type": "text", "text": "a cat"}, image]},
                {"role": "assistant", "content": [{"type": "text", "text": "Here:"}, image]},
                {"role": "user", "content": "describe it"}]}),
            &[],
        )
        .await;
    assert_eq!(r.status(), 200);
    let sent = an.last().unwrap().json();
    assert_eq!(
        sent["messages"][0]["content"][1], image,
        "the user's image stays: {sent}"
    );
    assert_eq!(
        sent["messages"][1]["content"],
        json!([{"type": "text", "text": "Here:"}]),
        "{sent}"
    );
    // A Responses client's image item the gateway wrote, now talking to OpenAI: OpenAI never
    // issued its id. One of OpenAI's own stays.
    let r = gw
        .post(
            "/v1/responses",
            json!({"model": "gpt-x", "input": [{"role": "user", "content": "a cat"},
                {"type": "image_generation_call", "id": "ig_apx_1", "status": "completed", "result": "iVBORw0KGgo="},
                {"type": "image_generation_call", "id": "ig_2", "status": "completed", "result": "iVBORw0KGgo="},
                {"role": "user", "content": "describe it"}]}),
            &[],
        )
        .await;
    let status = r.status();
    assert_eq!(status, 200, "{}", r.text().await.unwrap());
    let sent = oa.last().unwrap().json();
    let ids: Vec<&str> = sent["input"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(ids, ["ig_2"], "{sent}");
}
