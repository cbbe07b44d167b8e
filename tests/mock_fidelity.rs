//! The mocks are faithful: each official SDK, pointed directly at a mock of its own style (no
//! gateway), parses every answer in every mode, streamed and not — text, both parallel tool calls
//! with their arguments, finish reasons, usage with cached and reasoning tokens — and sees the
//! scripted errors as the errors it knows. The gateway's end-to-end tests can then trust the mocks.

mod common;

use common::mock::usage;
use common::*;
use serde_json::{json, Value};

const TOK: &str = "tok0 tok1 tok2 tok3 tok4 ";
const KEY: &str = "sk-direct-0123";

async fn openai(mock: &Mock, mode: &str) -> Option<Value> {
    let base = format!("{}/v1", mock.url());
    sdk::run_async("openai_client.py", &[&base, KEY, "gpt-x", mode]).await
}

async fn anthropic(mock: &Mock, mode: &str) -> Option<Value> {
    sdk::run_async("anthropic_client.py", &[&mock.url(), KEY, "claude-x", mode]).await
}

async fn gemini(mock: &Mock, mode: &str, version: &str) -> Option<Value> {
    sdk::run_async("gemini_client.py", &[&mock.url(), KEY, "gemini-x", mode, version]).await
}

fn chat_usage() -> Value {
    json!({"prompt_tokens": usage::PROMPT, "completion_tokens": usage::COMPLETION, "total_tokens": usage::TOTAL,
           "cached_tokens": usage::CACHED, "reasoning_tokens": usage::REASONING})
}

fn responses_usage() -> Value {
    json!({"input_tokens": usage::PROMPT, "output_tokens": usage::COMPLETION, "total_tokens": usage::TOTAL,
           "cached_tokens": usage::CACHED, "reasoning_tokens": usage::REASONING})
}

fn anthropic_usage() -> Value {
    json!({"input_tokens": usage::ANTHROPIC_INPUT, "output_tokens": usage::COMPLETION,
           "cache_read_input_tokens": usage::CACHED, "cache_creation_input_tokens": 0})
}

fn gemini_usage() -> Value {
    json!({"prompt_token_count": usage::PROMPT, "candidates_token_count": usage::GEMINI_CANDIDATES,
           "total_token_count": usage::TOTAL, "cached_content_token_count": usage::CACHED,
           "thoughts_token_count": usage::REASONING})
}

/// The two calls as (name, args), in order.
fn calls(v: &Value) -> Vec<(String, Value)> {
    v["tool_calls"]
        .as_array()
        .unwrap_or_else(|| panic!("no tool_calls: {v}"))
        .iter()
        .map(|c| (c["name"].as_str().unwrap_or("").to_string(), c["args"].clone()))
        .collect()
}

fn assert_two_calls(v: &Value) {
    assert_eq!(
        calls(v),
        [
            ("get_weather".to_string(), json!({"city": "Paris"})),
            ("get_time".to_string(), json!({"tz": "CET"}))
        ],
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_chat_sdk_accepts_the_openai_mock() {
    let m = Mock::start_style("oa", &["gpt-x"], Style::OpenAiChat).await;
    let Some(v) = openai(&m, "chat").await else {
        return;
    };
    assert_eq!(v["text"], "hello from oa", "{v}");
    assert_eq!(v["finish"], "stop");
    assert_eq!(v["usage"], chat_usage());
    assert_eq!(v["model"], "gpt-x");
    let r = m.last().unwrap();
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.header("authorization"), Some(format!("Bearer {KEY}").as_str()));

    // Raw chunks: no usage unless asked for, and then a usage chunk.
    let v = openai(&m, "chat_stream").await.unwrap();
    assert_eq!(v["text"], TOK, "{v}");
    assert_eq!(v["finish"], "stop");
    assert_eq!(v["usage"], Value::Null);
    let v = openai(&m, "chat_stream_usage").await.unwrap();
    assert_eq!(v["text"], TOK, "{v}");
    assert_eq!(v["usage"], chat_usage());
    assert_eq!(m.last().unwrap().json()["stream_options"]["include_usage"], true);

    // The SDK's own accumulator.
    let v = openai(&m, "chat_final_stream").await.unwrap();
    assert_eq!(v["text"], TOK, "{v}");
    assert_eq!(v["finish"], "stop");
    assert_eq!(v["usage"], chat_usage());

    m.script([Reply::ToolCalls, Reply::ToolCalls]);
    let v = openai(&m, "chat_tools").await.unwrap();
    assert_eq!(v["text"], "Let me check.", "{v}");
    assert_two_calls(&v);
    assert_eq!(v["tool_calls"][0]["id"], "call_1");
    assert_eq!(v["tool_calls"][1]["id"], "call_2");
    assert_eq!(v["finish"], "tool_calls");
    assert_eq!(v["usage"], chat_usage());
    assert_eq!(m.last().unwrap().json()["tools"].as_array().map(Vec::len), Some(2));
    let v = openai(&m, "chat_tools_stream").await.unwrap();
    assert_eq!(v["text"], "Let me check.", "{v}");
    assert_two_calls(&v);
    assert_eq!(v["tool_calls"][1]["id"], "call_2");
    assert_eq!(v["finish"], "tool_calls");
    assert_eq!(v["usage"], chat_usage());

    m.script([Reply::ToolCallsOnly, Reply::ToolCallsOnly]);
    let v = openai(&m, "chat_tools").await.unwrap();
    assert_eq!(v["text"], Value::Null, "{v}");
    assert_two_calls(&v);
    let v = openai(&m, "chat_tools_stream").await.unwrap();
    assert_eq!(v["text"], Value::Null, "{v}");
    assert_two_calls(&v);

    m.script([Reply::MaxTokens, Reply::MaxTokens, Reply::MaxTokens]);
    assert_eq!(openai(&m, "chat").await.unwrap()["finish"], "length");
    assert_eq!(openai(&m, "chat_stream").await.unwrap()["finish"], "length");
    // The stream helper refuses a truncated answer, tools or not.
    let v = openai(&m, "chat_final_stream").await.unwrap();
    assert_eq!(v["error"], "LengthFinishReasonError", "{v}");

    let v = openai(&m, "models").await.unwrap();
    assert_eq!(v["ids"], json!(["gpt-x"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_responses_sdk_accepts_the_responses_mocks() {
    for style in [Style::OpenAiChat, Style::Responses] {
        let m = Mock::start_style("rs", &["gpt-x"], style).await;
        let Some(v) = openai(&m, "responses").await else {
            return;
        };
        assert_eq!(v["text"], "hello from rs", "{style:?} {v}");
        assert_eq!(v["status"], "completed");
        assert_eq!(v["usage"], responses_usage());
        assert_eq!(m.last().unwrap().path, "/v1/responses");

        let v = openai(&m, "responses_stream").await.unwrap();
        assert_eq!(v["text"], TOK, "{v}");
        assert_eq!(v["final_text"], TOK, "{v}");
        assert_eq!(v["status"], "completed");
        assert_eq!(v["usage"], responses_usage());

        m.script([Reply::ToolCalls, Reply::ToolCalls]);
        let v = openai(&m, "responses_tools").await.unwrap();
        assert_eq!(v["text"], "Let me check.", "{v}");
        assert_two_calls(&v);
        assert_eq!(v["tool_calls"][0]["id"], "call_1");
        assert_eq!(v["usage"], responses_usage());
        let v = openai(&m, "responses_tools_stream").await.unwrap();
        assert_eq!(v["text"], "Let me check.", "{v}");
        assert_eq!(v["delta_text"], "Let me check.");
        assert_two_calls(&v);
        assert_eq!(
            v["delta_args"],
            json!({"fc_1": "{\"city\": \"Paris\"}", "fc_2": "{\"tz\": \"CET\"}"})
        );
        assert_eq!(v["status"], "completed");
        assert_eq!(v["usage"], responses_usage());

        m.script([Reply::ToolCallsOnly]);
        let v = openai(&m, "responses_tools_stream").await.unwrap();
        assert_eq!(v["text"], Value::Null, "{v}");
        assert_two_calls(&v);

        m.script([Reply::MaxTokens]);
        let v = openai(&m, "responses").await.unwrap();
        assert_eq!(v["status"], "incomplete", "{v}");
        assert_eq!(v["incomplete_reason"], "max_output_tokens");
    }
    // A Responses-only upstream has no chat completions, and a Chat-only one no Responses.
    let m = Mock::start_style("ro", &["gpt-x"], Style::Responses).await;
    let v = openai(&m, "chat").await.unwrap();
    assert_eq!(v["status"], 404, "{v}");
    let m = Mock::start_style("co", &["gpt-x"], Style::ChatOnly).await;
    let v = openai(&m, "responses").await.unwrap();
    assert_eq!(v["status"], 404, "{v}");
    assert_eq!(openai(&m, "chat").await.unwrap()["text"], "hello from co");
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_sdk_sees_openai_errors() {
    let m = Mock::start_style("oe", &["gpt-x"], Style::OpenAiChat).await;
    m.script([Reply::status_retry_after(429, 7)]);
    let Some(v) = openai(&m, "chat").await else {
        return;
    };
    assert_eq!(v["error"], "RateLimitError", "{v}");
    assert_eq!(v["status"], 429);
    assert_eq!(v["body"]["code"], "rate_limit_exceeded", "{v}");

    m.script([Reply::StreamError { after: 2 }]);
    let v = openai(&m, "chat_final_stream").await.unwrap();
    assert_eq!(v["error"], "APIError", "{v}");

    m.script([Reply::StreamError { after: 3 }]);
    let v = openai(&m, "responses_stream").await.unwrap();
    assert!(v["error"].is_string(), "{v}");

    // A verbatim stream.
    let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x",
                       "choices": [{"index": 0, "delta": {"role": "assistant", "content": "verbatim"}, "finish_reason": "stop"}]});
    m.script([Reply::Sse(vec![
        format!("data: {chunk}\n\n"),
        "data: [DONE]\n\n".into(),
    ])]);
    let v = openai(&m, "chat_stream").await.unwrap();
    assert_eq!((&v["text"], &v["finish"]), (&json!("verbatim"), &json!("stop")), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_sdk_accepts_the_anthropic_mock() {
    let m = Mock::start_style("an", &["claude-x"], Style::Anthropic).await;
    m.set_strict(true);
    let Some(v) = anthropic(&m, "text").await else {
        return;
    };
    assert_eq!(v["text"], "hello from an", "{v}");
    assert_eq!(v["stop"], "end_turn");
    assert_eq!(v["usage"], anthropic_usage());
    assert_eq!(v["model"], "claude-x");
    let r = m.last().unwrap();
    assert_eq!(r.path_only(), "/v1/messages");
    assert!(r.header("anthropic-version").is_some());

    let v = anthropic(&m, "text_stream").await.unwrap();
    assert_eq!(v["text"], TOK, "{v}");
    assert_eq!(v["delta_text"], TOK, "{v}");
    assert_eq!(v["stop"], "end_turn");
    assert_eq!(v["usage"], anthropic_usage());

    m.script([Reply::ToolCalls, Reply::ToolCalls]);
    let v = anthropic(&m, "tools").await.unwrap();
    assert_eq!(v["text"], "Let me check.", "{v}");
    assert_two_calls(&v);
    assert_eq!(v["tool_calls"][0]["id"], "toolu_01");
    assert_eq!(v["stop"], "tool_use");
    assert_eq!(v["usage"], anthropic_usage());
    let v = anthropic(&m, "tools_stream").await.unwrap();
    assert_eq!(v["text"], "Let me check.", "{v}");
    assert_eq!(v["blocks"], json!(["text", "tool_use", "tool_use"]));
    assert_two_calls(&v);
    assert_eq!(v["stop"], "tool_use");
    assert_eq!(v["usage"], anthropic_usage());

    m.script([Reply::ToolCallsOnly, Reply::MaxTokens]);
    let v = anthropic(&m, "tools_stream").await.unwrap();
    assert_eq!(v["blocks"], json!(["tool_use", "tool_use"]), "{v}");
    assert_two_calls(&v);
    assert_eq!(anthropic(&m, "text_stream").await.unwrap()["stop"], "max_tokens");

    let v = anthropic(&m, "raw_stream").await.unwrap();
    assert_eq!(v["events"][0], "message_start", "{v}");
    assert_eq!(v["events"].as_array().unwrap().last().unwrap(), "message_stop");

    let v = anthropic(&m, "models").await.unwrap();
    assert_eq!(v["ids"], json!(["claude-x"]), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_sdk_sees_anthropic_errors() {
    let m = Mock::start_style("ae", &["claude-x"], Style::Anthropic).await;
    m.script([Reply::overloaded()]);
    let Some(v) = anthropic(&m, "text").await else {
        return;
    };
    assert_eq!(v["error"], "OverloadedError", "{v}");
    assert_eq!(v["status"], 529);
    assert_eq!(v["body"]["error"]["type"], "overloaded_error");

    m.script([Reply::status(429)]);
    let v = anthropic(&m, "text").await.unwrap();
    assert_eq!(v["error"], "RateLimitError", "{v}");
    assert_eq!(v["body"]["error"]["type"], "rate_limit_error");

    // A mid-stream `event: error` raises, with the HTTP status of the stream (200).
    m.script([Reply::StreamError { after: 4 }]);
    let v = anthropic(&m, "text_stream").await.unwrap();
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["body"]["error"]["type"], "overloaded_error", "{v}");

    // Strict mode refuses a request without credentials in Anthropic's shape.
    m.set_strict(true);
    let r = reqwest::Client::new()
        .post(format!("{}/v1/messages", m.url()))
        .json(&json!({"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["request-id"], "req_mock");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
}

#[tokio::test(flavor = "multi_thread")]
async fn gemini_sdk_accepts_the_gemini_mock() {
    let m = Mock::start_style("ge", &["gemini-x"], Style::Gemini).await;
    m.set_strict(true);
    for version in ["v1beta", "v1"] {
        let Some(v) = gemini(&m, "text", version).await else {
            return;
        };
        assert_eq!(v["text"], "hello from ge", "{v}");
        assert_eq!(v["finish"], "STOP");
        assert_eq!(v["usage"], gemini_usage());
        assert_eq!(v["model"], "gemini-x");
        let r = m.last().unwrap();
        assert_eq!(r.path, format!("/{version}/models/gemini-x:generateContent"));
        assert_eq!(r.header("x-goog-api-key"), Some(KEY));
        assert_eq!(r.model().as_deref(), Some("gemini-x"));

        let v = gemini(&m, "text_stream", version).await.unwrap();
        assert_eq!(v["text"], TOK, "{v}");
        assert_eq!(v["chunks"], 5);
        assert_eq!(v["finish"], "STOP");
        assert_eq!(v["usage"], gemini_usage());
        let r = m.last().unwrap();
        assert_eq!(
            r.path,
            format!("/{version}/models/gemini-x:streamGenerateContent?alt=sse")
        );

        m.script([Reply::ToolCalls, Reply::ToolCalls]);
        let v = gemini(&m, "tools", version).await.unwrap();
        assert_eq!(v["text"], "Let me check.", "{v}");
        assert_two_calls(&v);
        assert_eq!(v["tool_calls"][0]["signature"], "bW9jay10aG91Z2h0LXNpZ25hdHVyZQ==");
        assert_eq!(v["tool_calls"][1]["signature"], Value::Null);
        assert_eq!(v["finish"], "STOP");
        assert_eq!(v["usage"], gemini_usage());
        assert!(m.last().unwrap().json()["tools"][0]["functionDeclarations"].is_array());
        let v = gemini(&m, "tools_stream", version).await.unwrap();
        assert_eq!(v["text"], "Let me check.", "{v}");
        assert_two_calls(&v);
        assert_eq!(v["tool_calls"][0]["signature"], "bW9jay10aG91Z2h0LXNpZ25hdHVyZQ==");
        assert_eq!(v["chunks"], 5, "2 text chunks, 2 call chunks, the finish chunk");
        assert_eq!(v["finish"], "STOP");
        assert_eq!(v["usage"], gemini_usage());
    }
    m.script([Reply::ToolCallsOnly, Reply::MaxTokens]);
    let v = gemini(&m, "tools_stream", "v1beta").await.unwrap();
    assert_eq!(v["text"], Value::Null, "{v}");
    assert_two_calls(&v);
    assert_eq!(gemini(&m, "text", "v1beta").await.unwrap()["finish"], "MAX_TOKENS");

    let v = gemini(&m, "models", "v1beta").await.unwrap();
    assert_eq!(v["ids"], json!(["models/gemini-x"]), "{v}");
    assert_eq!(m.all_requests().last().unwrap().path_only(), "/v1beta/models");
}

#[tokio::test(flavor = "multi_thread")]
async fn gemini_sdk_sees_gemini_errors_and_the_json_array_stream() {
    let m = Mock::start_style("gx", &["gemini-x"], Style::Gemini).await;
    m.script([Reply::status(429)]);
    let Some(v) = gemini(&m, "text", "v1beta").await else {
        return;
    };
    assert_eq!(v["error"], "ClientError", "{v}");
    assert_eq!(v["status"], 429);
    assert_eq!(v["status_text"], "RESOURCE_EXHAUSTED");

    m.script([Reply::gemini_bad_key()]);
    let v = gemini(&m, "text", "v1beta").await.unwrap();
    assert_eq!(v["status"], 400, "{v}");
    assert_eq!(v["status_text"], "INVALID_ARGUMENT");

    m.script([Reply::StreamError { after: 2 }]);
    let v = gemini(&m, "text_stream", "v1beta").await.unwrap();
    assert_eq!(v["error"], "ServerError", "{v}");
    assert_eq!(v["status"], 503);

    // Without alt=sse the stream is one JSON array, sent element by element.
    m.script([Reply::ToolCalls]);
    let r = reqwest::Client::new()
        .post(format!("{}/v1beta/models/gemini-x:streamGenerateContent", m.url()))
        .header("x-goog-api-key", KEY)
        .json(&json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let arr: Value = r.json().await.unwrap();
    let chunks = arr.as_array().unwrap();
    assert_eq!(chunks.len(), 5);
    assert_eq!(
        chunks[2]["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
        "get_weather"
    );
    assert_eq!(chunks[4]["candidates"][0]["finishReason"], "STOP");

    // Unknown paths are a 404 in Gemini's shape.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", m.url()))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["status"], "NOT_FOUND");
}

/// What each SDK does, by itself, with a stream that ends without its terminator or breaks: most
/// end quietly with no finish reason, which is why the gateway must turn both into an error event.
#[tokio::test(flavor = "multi_thread")]
async fn sdks_on_broken_streams() {
    let o = Mock::start_style("o", &["gpt-x"], Style::OpenAiChat).await;
    let a = Mock::start_style("a", &["claude-x"], Style::Anthropic).await;
    let g = Mock::start_style("g", &["gemini-x"], Style::Gemini).await;

    o.script([Reply::StreamCut { after: 3 }]);
    let Some(v) = openai(&o, "chat_final_stream").await else {
        return;
    };
    assert_eq!(
        (&v["text"], &v["finish"]),
        (&json!("tok0 tok1 tok2 "), &Value::Null),
        "{v}"
    );
    o.script([Reply::StreamCut { after: 3 }]);
    let v = openai(&o, "responses_stream").await.unwrap();
    assert_eq!(v["error"], "RuntimeError", "{v}");
    a.script([Reply::StreamCut { after: 4 }]);
    let v = anthropic(&a, "text_stream").await.unwrap();
    assert_eq!((&v["text"], &v["stop"]), (&json!("tok0 "), &Value::Null), "{v}");
    g.script([Reply::StreamCut { after: 2 }]);
    let v = gemini(&g, "text_stream", "v1beta").await.unwrap();
    assert_eq!((&v["text"], &v["finish"]), (&json!("tok0 tok1 "), &Value::Null), "{v}");

    // A reset mid-body: openai wraps it, the others let httpx's ReadError through.
    o.script([Reply::StreamAbort { after: 3 }]);
    assert_eq!(openai(&o, "chat_stream").await.unwrap()["error"], "APIConnectionError");
    a.script([Reply::StreamAbort { after: 4 }]);
    assert_eq!(anthropic(&a, "text_stream").await.unwrap()["error"], "ReadError");
    g.script([Reply::StreamAbort { after: 2 }]);
    assert_eq!(gemini(&g, "text_stream", "v1beta").await.unwrap()["error"], "ReadError");

    // What the SDKs send, for the gateway's client-side parsers.
    let r = a.last().unwrap();
    assert_eq!(r.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(r.header("x-api-key"), None);
    assert_eq!(r.header("anthropic-version"), Some("2026-10-21"));
    gemini(&g, "text", "sdk").await.unwrap();
    assert_eq!(g.last().unwrap().path, "/v1/models/gemini-x:generateContent");
}

/// Reasoning before the tool calls, in each format's own shape, streamed and not.
#[tokio::test(flavor = "multi_thread")]
async fn every_sdk_sees_the_reasoning() {
    use common::mock::{ENCRYPTED_REASONING, THINKING_SIGNATURE, THOUGHT_SIGNATURE};
    let o = Mock::start_style("o", &["gpt-x"], Style::OpenAiChat).await;
    let a = Mock::start_style("a", &["claude-x"], Style::Anthropic).await;
    let g = Mock::start_style("g", &["gemini-x"], Style::Gemini).await;
    o.set_default(Reply::Thinking);
    a.set_default(Reply::Thinking);
    g.set_default(Reply::Thinking);
    for mode in ["chat_tools", "chat_tools_stream"] {
        let Some(v) = openai(&o, mode).await else {
            return;
        };
        assert_eq!(v["reasoning"], "Let me think.", "{mode}: {v}");
        assert_eq!(v["text"], Value::Null, "{mode}: {v}");
        assert_two_calls(&v);
    }
    for mode in ["responses_tools", "responses_tools_stream"] {
        let v = openai(&o, mode).await.unwrap();
        assert_eq!(v["reasoning"], "Let me think.", "{mode}: {v}");
        assert_eq!(v["encrypted_content"], ENCRYPTED_REASONING);
        assert_two_calls(&v);
        assert_eq!(v["usage"], responses_usage());
    }
    for mode in ["tools", "tools_stream"] {
        let v = anthropic(&a, mode).await.unwrap();
        assert_eq!(v["thinking"], "Let me think.", "{mode}: {v}");
        assert_eq!(v["signature"], THINKING_SIGNATURE);
        assert_eq!(v["blocks"], json!(["thinking", "tool_use", "tool_use"]));
        assert_two_calls(&v);
        assert_eq!(v["stop"], "tool_use");
    }
    for mode in ["tools", "tools_stream"] {
        let v = gemini(&g, mode, "v1beta").await.unwrap();
        assert_eq!(v["thoughts"], "Let me think.", "{mode}: {v}");
        assert_eq!(v["text"], Value::Null, "{mode}: {v}");
        assert_two_calls(&v);
        assert_eq!(v["tool_calls"][0]["signature"], THOUGHT_SIGNATURE);
        assert_eq!(v["usage"], gemini_usage());
    }
}
