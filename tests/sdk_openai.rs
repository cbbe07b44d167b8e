//! The official OpenAI Python SDK pointed at the gateway: chat and Responses, streamed and not,
//! failover, and errors the SDK understands.

mod common;

use common::*;

async fn setup() -> (Mock, Mock, Gateway) {
    let a = Mock::start("alpha", &["gpt-a"]).await;
    let b = Mock::start("beta", &["gpt-b"]).await;
    let yaml = format!(
        "providers:\n{}{}logical_models:\n  - id: fast-model\n    upstreams: [{{provider: alpha, model: gpt-a}}, {{provider: beta, model: gpt-b, priority: 1}}]\n",
        provider_yaml("alpha", &a, ""),
        provider_yaml("beta", &b, "")
    );
    (a, b, Gateway::start(&yaml).await)
}

/// Runs the SDK off the async runtime (it blocks).
async fn sdk(gw: &Gateway, model: &str, mode: &str) -> Option<serde_json::Value> {
    let base = gw.url("/v1");
    let (model, mode) = (model.to_string(), mode.to_string());
    tokio::task::spawn_blocking(move || sdk::run("openai_client.py", &[&base, CLIENT_KEY, &model, &mode]))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_sdk_through_the_gateway() {
    let (a, b, gw) = setup().await;
    let Some(v) = sdk(&gw, "fast-model", "chat").await else {
        return;
    };
    assert_eq!(v["text"], "hello from alpha", "{v}");
    assert_eq!(v["finish"], "stop");

    let v = sdk(&gw, "fast-model", "chat_stream").await.unwrap();
    assert_eq!(v["text"], "tok0 tok1 tok2 tok3 tok4 ", "{v}");
    assert_eq!(v["finish"], "stop");

    let v = sdk(&gw, "gpt-a", "responses").await.unwrap();
    assert_eq!(v["text"], "hello from alpha", "{v}");
    let v = sdk(&gw, "gpt-a", "responses_stream").await.unwrap();
    assert_eq!(v["text"], "tok0 tok1 tok2 tok3 tok4 ", "{v}");
    assert_eq!(v["status"], "completed");

    let v = sdk(&gw, "-", "models").await.unwrap();
    let ids: Vec<&str> = v["ids"].as_array().unwrap().iter().filter_map(|x| x.as_str()).collect();
    assert_eq!(ids, ["fast-model", "gpt-a", "gpt-b"]);

    // Failover is invisible to the SDK, streaming too.
    a.script([Reply::status(503)]);
    let v = sdk(&gw, "fast-model", "chat").await.unwrap();
    assert_eq!(v["text"], "hello from beta", "{v}");
    let before = b.hits();
    a.script([Reply::status(429)]);
    let v = sdk(&gw, "fast-model", "chat_stream").await.unwrap();
    assert_eq!(v["text"], "tok0 tok1 tok2 tok3 tok4 ", "{v}");
    assert_eq!(v["finish"], "stop");
    assert_eq!(b.hits(), before + 1, "beta answered the stream");
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_sdk_sees_errors_it_understands() {
    let (a, _b, gw) = setup().await;
    let Some(v) = sdk(&gw, "no-such-model", "chat").await else {
        return;
    };
    assert_eq!(v["error"], "NotFoundError", "{v}");
    assert_eq!(v["status"], 404);

    // A stream cut mid-way raises in the SDK instead of ending quietly.
    a.script([Reply::StreamCut { after: 2 }]);
    let v = sdk(&gw, "gpt-a", "chat_stream").await.unwrap();
    assert!(v["error"].is_string(), "the SDK must see the cut: {v}");
}

/// A Gemini image model's answer, as each official SDK reads it through the gateway: the Chat and
/// Responses clients of the OpenAI SDK and the Anthropic SDK, whole and through their stream
/// helpers (whose accumulators are the judges).
#[tokio::test(flavor = "multi_thread")]
async fn sdks_read_the_images_a_gemini_model_made() {
    use common::mock::Style;
    use serde_json::json;
    let gm = Mock::start_style("gm", &["gemini-image"], Style::Gemini).await;
    let gw = Gateway::start(&format!("providers:\n{}", provider_yaml_styled("gm", &gm, ""))).await;
    let (one, two) = ("iVBORw0KGgoAAAA=", "iVBORw0KGgoBBBB=");
    let picture = |data: &str| json!({"inlineData": {"mimeType": "image/png", "data": data}});
    let whole = json!({"candidates": [{"index": 0, "finishReason": "STOP",
        "content": {"role": "model", "parts": [{"text": "Two cats:"}, picture(one), picture(two)]}}]})
    .to_string();
    let chunk = |parts: serde_json::Value| {
        format!(
            "data: {}\r\n\r\n",
            json!({"candidates": [{"index": 0,
        "content": {"role": "model", "parts": parts}}]})
        )
    };
    let sse = vec![
        chunk(json!([{"text": "Two cats:"}])),
        chunk(json!([picture(one)])),
        chunk(json!([picture(two)])),
        format!(
            "data: {}\r\n\r\n",
            json!({"candidates": [{"index": 0, "finishReason": "STOP",
            "content": {"role": "model", "parts": [{"text": ""}]}}]})
        ),
    ];
    let run = |script: &'static str, mode: &'static str, base: String| async move {
        sdk::run_async(script, &[&base, CLIENT_KEY, "gemini-image", mode]).await
    };
    let urls = json!([
        format!("data:image/png;base64,{one}"),
        format!("data:image/png;base64,{two}")
    ]);
    for (script, mode, base, want) in [
        ("openai_client.py", "chat_images", gw.url("/v1"), urls.clone()),
        ("openai_client.py", "chat_images_stream", gw.url("/v1"), urls.clone()),
        ("openai_client.py", "responses_images", gw.url("/v1"), json!([one, two])),
        (
            "openai_client.py",
            "responses_images_stream",
            gw.url("/v1"),
            json!([one, two]),
        ),
        ("anthropic_client.py", "images", gw.url(""), json!([one, two])),
        ("anthropic_client.py", "images_stream", gw.url(""), json!([one, two])),
    ] {
        gm.script([match mode.ends_with("_stream") {
            true => Reply::Sse(sse.clone()),
            false => Reply::status_body(200, whole.clone()),
        }]);
        let Some(v) = run(script, mode, base).await else {
            return;
        };
        assert_eq!(v["images"], want, "{script} {mode}: {v}");
    }
}
