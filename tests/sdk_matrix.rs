//! Every client format × every upstream format, through the gateway, with the official SDKs as
//! clients and their own accumulators as judges: text and parallel tool calls, streamed and not,
//! usage included. One test per client SDK; each drives mocks of all four upstream styles.

mod common;

use common::mock::{usage, Style};
use common::*;
use std::time::Duration;

use serde_json::{json, Value};

const TOK: &str = "tok0 tok1 tok2 tok3 tok4 ";

/// The four upstream styles, each behind a logical model `via-<name>`.
struct Upstreams {
    mocks: Vec<(&'static str, Mock)>,
    gw: Gateway,
}

const STYLES: [(&str, Style); 4] = [
    ("openai", Style::OpenAiChat),
    ("responses", Style::Responses),
    ("anthropic", Style::Anthropic),
    ("gemini", Style::Gemini),
];

async fn upstreams() -> Upstreams {
    let mut mocks = Vec::new();
    let mut yaml = "providers:\n".to_string();
    let mut logical = "logical_models:\n".to_string();
    for (name, style) in STYLES {
        let mock = Mock::start_style(name, &[], style).await;
        mock.set_strict(true);
        // Events far enough apart for the gateway's keep-alive comments to fall between them: every
        // streamed case below is also a test that the SDKs skip them.
        mock.set_event_gap(Duration::from_millis(60));
        yaml.push_str(&provider_yaml_styled(name, &mock, ", models: [m]"));
        logical.push_str(&format!(
            "  - {{id: via-{name}, upstreams: [{{provider: {name}, model: m-{name}}}]}}\n"
        ));
        mocks.push((name, mock));
    }
    let gw = Gateway::start(&format!("server: {{stream_keepalive_ms: 25}}\n{yaml}{logical}")).await;
    Upstreams { mocks, gw }
}

impl Upstreams {
    fn mock(&self, name: &str) -> &Mock {
        &self.mocks.iter().find(|(n, _)| *n == name).expect("mock").1
    }
}

fn calls(v: &Value) -> Vec<(String, Value)> {
    v["tool_calls"]
        .as_array()
        .unwrap_or_else(|| panic!("no tool_calls: {v}"))
        .iter()
        .map(|c| (c["name"].as_str().unwrap_or("").to_string(), c["args"].clone()))
        .collect()
}

fn two_calls() -> Vec<(String, Value)> {
    vec![
        ("get_weather".to_string(), json!({"city": "Paris"})),
        ("get_time".to_string(), json!({"tz": "CET"})),
    ]
}

/// What the upstream received: the model it was asked for, in its own format and with its own auth.
fn assert_upstream_saw(up: &Upstreams, name: &str) {
    let r = up.mock(name).last().unwrap_or_else(|| panic!("{name} got nothing"));
    assert_eq!(
        r.model().as_deref(),
        Some(format!("m-{name}").as_str()),
        "{name}: {}",
        r.path
    );
    let key = provider_key(name);
    let auth = match name {
        "anthropic" => r.header("x-api-key").map(str::to_string),
        "gemini" => r.header("x-goog-api-key").map(str::to_string),
        _ => r
            .header("authorization")
            .map(|v| v.trim_start_matches("Bearer ").to_string()),
    };
    assert_eq!(auth.as_deref(), Some(key.as_str()), "{name} credentials");
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_chat_clients_reach_every_upstream() {
    let up = upstreams().await;
    // The streams the SDKs read carry keep-alives.
    let raw = up
        .gw
        .chat(json!({"model": "via-anthropic", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .await;
    let raw = raw.text().await.unwrap();
    assert!(
        raw.contains("\n: ping\n\n") && raw.ends_with("data: [DONE]\n\n"),
        "{raw}"
    );
    let base = up.gw.url("/v1");
    for (name, _) in STYLES {
        let model = format!("via-{name}");
        let run = |mode: &'static str| {
            let (base, model) = (base.clone(), model.clone());
            async move { sdk::run_async("openai_client.py", &[&base, CLIENT_KEY, &model, mode]).await }
        };
        let Some(v) = run("chat").await else { return };
        assert_eq!(v["text"], format!("hello from {name}"), "{name}: {v}");
        assert_eq!(v["finish"], "stop", "{name}: {v}");
        assert_eq!(v["usage"]["prompt_tokens"], usage::PROMPT, "{name}: {v}");
        assert_eq!(v["usage"]["completion_tokens"], usage::COMPLETION, "{name}: {v}");
        assert_eq!(v["usage"]["total_tokens"], usage::TOTAL, "{name}: {v}");
        assert_eq!(v["usage"]["cached_tokens"], usage::CACHED, "{name}: {v}");
        assert_upstream_saw(&up, name);

        let v = run("chat_final_stream").await.unwrap();
        assert_eq!(v["text"], TOK, "{name}: {v}");
        assert_eq!(v["finish"], "stop", "{name}: {v}");
        assert_eq!(v["usage"]["total_tokens"], usage::TOTAL, "{name}: {v}");

        up.mock(name).script([Reply::ToolCalls, Reply::ToolCalls]);
        let v = run("chat_tools").await.unwrap();
        assert_eq!(calls(&v), two_calls(), "{name}: {v}");
        assert_eq!(v["finish"], "tool_calls", "{name}: {v}");
        let v = run("chat_tools_stream").await.unwrap();
        assert_eq!(calls(&v), two_calls(), "{name}: {v}");
        assert_eq!(v["finish"], "tool_calls", "{name}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_responses_clients_reach_every_upstream() {
    let up = upstreams().await;
    let base = up.gw.url("/v1");
    for (name, _) in STYLES {
        let model = format!("via-{name}");
        let run = |mode: &'static str| {
            let (base, model) = (base.clone(), model.clone());
            async move { sdk::run_async("openai_client.py", &[&base, CLIENT_KEY, &model, mode]).await }
        };
        let Some(v) = run("responses").await else { return };
        assert_eq!(v["text"], format!("hello from {name}"), "{name}: {v}");
        assert_eq!(v["status"], "completed", "{name}: {v}");
        assert_eq!(v["usage"]["input_tokens"], usage::PROMPT, "{name}: {v}");
        assert_eq!(v["usage"]["output_tokens"], usage::COMPLETION, "{name}: {v}");
        assert_upstream_saw(&up, name);

        let v = run("responses_stream").await.unwrap();
        assert_eq!(v["text"], TOK, "{name}: {v}");
        assert_eq!(v["final_text"], TOK, "{name}: {v}");
        assert_eq!(v["status"], "completed", "{name}: {v}");

        up.mock(name).script([Reply::ToolCalls, Reply::ToolCalls]);
        let v = run("responses_tools").await.unwrap();
        assert_eq!(calls(&v), two_calls(), "{name}: {v}");
        let v = run("responses_tools_stream").await.unwrap();
        assert_eq!(calls(&v), two_calls(), "{name}: {v}");
        assert_eq!(v["status"], "completed", "{name}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_clients_reach_every_upstream() {
    let up = upstreams().await;
    let base = up.gw.url("");
    for (name, _) in STYLES {
        let model = format!("via-{name}");
        let run = |mode: &'static str| {
            let (base, model) = (base.clone(), model.clone());
            async move { sdk::run_async("anthropic_client.py", &[&base, CLIENT_KEY, &model, mode]).await }
        };
        let Some(v) = run("text").await else { return };
        assert_eq!(v["text"], format!("hello from {name}"), "{name}: {v}");
        assert_eq!(v["stop"], "end_turn", "{name}: {v}");
        // Anthropic's input excludes the cache read.
        assert_eq!(v["usage"]["input_tokens"], usage::ANTHROPIC_INPUT, "{name}: {v}");
        assert_eq!(v["usage"]["cache_read_input_tokens"], usage::CACHED, "{name}: {v}");
        assert_eq!(v["usage"]["output_tokens"], usage::COMPLETION, "{name}: {v}");
        assert_upstream_saw(&up, name);

        let v = run("text_stream").await.unwrap();
        assert_eq!(v["text"], TOK, "{name}: {v}");
        assert_eq!(v["delta_text"], TOK, "{name}: {v}");
        assert_eq!(v["stop"], "end_turn", "{name}: {v}");
        assert_eq!(v["usage"]["output_tokens"], usage::COMPLETION, "{name}: {v}");

        up.mock(name).script([Reply::ToolCalls, Reply::ToolCalls]);
        let v = run("tools").await.unwrap();
        assert_eq!(calls(&v), two_calls(), "{name}: {v}");
        assert_eq!(v["stop"], "tool_use", "{name}: {v}");
        let v = run("tools_stream").await.unwrap();
        assert_eq!(calls(&v), two_calls(), "{name}: {v}");
        assert_eq!(v["stop"], "tool_use", "{name}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gemini_clients_reach_every_upstream() {
    let up = upstreams().await;
    let base = up.gw.url("");
    for (name, _) in STYLES {
        let model = format!("via-{name}");
        let run = |mode: &'static str, version: &'static str| {
            let (base, model) = (base.clone(), model.clone());
            async move { sdk::run_async("gemini_client.py", &[&base, CLIENT_KEY, &model, mode, version]).await }
        };
        let Some(v) = run("text", "v1beta").await else { return };
        assert_eq!(v["text"], format!("hello from {name}"), "{name}: {v}");
        assert_eq!(v["finish"], "STOP", "{name}: {v}");
        assert_eq!(v["usage"]["prompt_token_count"], usage::PROMPT, "{name}: {v}");
        assert_eq!(v["usage"]["total_token_count"], usage::TOTAL, "{name}: {v}");
        assert_upstream_saw(&up, name);

        // The SDK's default API version (v1) streams too.
        let v = run("text_stream", "sdk").await.unwrap();
        assert_eq!(v["text"], TOK, "{name}: {v}");
        assert_eq!(v["finish"], "STOP", "{name}: {v}");

        up.mock(name).script([Reply::ToolCalls, Reply::ToolCalls]);
        let v = run("tools", "v1beta").await.unwrap();
        assert_eq!(calls(&v), two_calls(), "{name}: {v}");
        let v = run("tools_stream", "v1beta").await.unwrap();
        assert_eq!(calls(&v), two_calls(), "{name}: {v}");
    }
}

/// Token counts and embeddings through the SDKs that ask for them: Claude's and Gemini's counts
/// answered by the upstreams that count, with the upstream's own number (a 404 the SDK raises for
/// a model whose upstream cannot); OpenAI's embeddings (asked as base64 and decoded by the SDK)
/// from OpenAI- and Gemini-style upstreams.
#[tokio::test(flavor = "multi_thread")]
async fn counts_and_embeddings_through_the_sdks() {
    let up = upstreams().await;
    let base = up.gw.url("");
    for name in ["anthropic", "gemini", "openai"] {
        let model = format!("via-{name}");
        let Some(v) = sdk::run_async("anthropic_client.py", &[&base, CLIENT_KEY, &model, "count_tokens"]).await else {
            return;
        };
        if name == "openai" {
            assert_eq!(v["status"], 404, "{v}");
            assert_eq!(up.mock(name).hits(), 0);
            continue;
        }
        // The mocks count a prompt's words, the same in either format.
        let counted = |name: &str| common::mock::prompt_tokens(&up.mock(name).last().unwrap().json());
        assert!(counted(name) > 0);
        assert_eq!(v["input_tokens"], counted(name), "{name}: {v}");
        assert_upstream_saw(&up, name);
        for version in ["v1beta", "sdk"] {
            let args = [&base[..], CLIENT_KEY, &model, "count_tokens", version];
            let v = sdk::run_async("gemini_client.py", &args).await.unwrap();
            assert_eq!(v["total_tokens"], counted(name), "{name} {version}: {v}");
        }
    }
    let want: Vec<Vec<f64>> = ["the quick fox", "jumps"]
        .iter()
        .map(|t| common::mock::mock_vector(t))
        .collect();
    for name in ["openai", "gemini"] {
        let args = [&up.gw.url("/v1")[..], CLIENT_KEY, &format!("via-{name}"), "embeddings"];
        let v = sdk::run_async("openai_client.py", &args).await.unwrap();
        assert_eq!(v["vectors"], json!(want), "{name}: {v}");
        assert_upstream_saw(&up, name);
    }
}
