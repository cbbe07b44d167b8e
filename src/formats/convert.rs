//! The whole-body entry points: request and response translation through the IR, and usage extraction.

use std::sync::LazyLock;

use bytes::Bytes;
use memchr::memmem::FinderRev;
use serde_json::Value;

use super::ir::{Block, FetchedMedia, FinishReason, IrRequest, IrResponse};
use super::tool_names::ToolNames;
use super::usage::Usage;
use super::wire::{Vendor, WireFormat};
use super::{anthropic, gemini, openai_chat, responses_api};

/// Why a body could not be translated. Both are the client's 400 `invalid_request_error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The body is not valid for its own format.
    #[error("{0}")]
    Invalid(String),
    /// Valid, but the upstream's format cannot express it faithfully (n>1 to Anthropic, server tools, …).
    #[error("{0}")]
    Unsupported(String),
}

/// How to build the upstream request.
#[derive(Debug, Clone)]
pub struct RequestOptions {
    /// The physical upstream model.
    pub model: String,
    pub stream: bool,
    /// Anthropic requires `max_tokens`; used when the client gave none (e.g. 4096).
    pub default_max_tokens: u32,
    /// Images and files the gateway fetched (see `media_to_fetch`), sent inline instead of by URL.
    pub fetched_media: Option<std::sync::Arc<FetchedMedia>>,
    /// An OpenAI Chat stream asks for its usage (`stream_options.include_usage`); off for an
    /// upstream that refuses the field (Mistral's 422 `extra_forbidden`, which reports usage anyway).
    pub stream_usage: bool,
    /// An OpenAI Chat upstream that wants the assistant turns' reasoning back as `reasoning_content`
    /// (DeepSeek's and Moonshot's own APIs: their thinking modes refuse a tool call's follow-up
    /// without it). Others get no such field: Groq and Cerebras refuse it, even empty.
    pub replay_reasoning: bool,
}

/// Client body (format `from`) → upstream body (format `to`), `model` set to `opts.model`. Never called with
/// `from == to` (same-format traffic passes through byte for byte). An OpenAI Chat upstream asked to stream gets
/// `stream_options.include_usage: true`. Gemini's model and stream flag live in the URL, not the body.
pub fn convert_request(
    from: WireFormat,
    to: WireFormat,
    body: &[u8],
    opts: &RequestOptions,
) -> Result<Bytes, ConvertError> {
    convert_request_named(from, to, body, opts).map(|t| t.body)
}

/// A request translated for its upstream, with what reading its answer needs to know.
#[derive(Debug)]
pub struct Translated {
    pub body: Bytes,
    /// The tool names renamed for the upstream (see `tool_names`): for `convert_response_named` or
    /// `StreamOptions::tool_names`, so the client gets its own names back.
    pub tool_names: Option<ToolNames>,
    /// The answer comes as the input of Anthropic's JSON-mode tool (`StreamOptions::json_mode`).
    pub json_mode: bool,
}

/// As `convert_request`, with what the answer's translation needs (`Translated`).
pub fn convert_request_named(
    from: WireFormat,
    to: WireFormat,
    body: &[u8],
    opts: &RequestOptions,
) -> Result<Translated, ConvertError> {
    let obj = super::json::parse_object(body)?;
    let mut ir = parse_request(from, &obj)?;
    let n = obj.get("n").and_then(Value::as_u64).unwrap_or(1);
    if n > 1 && from != to {
        // Every encoder streams choice 0 only, and Anthropic/Responses have no `n`.
        return Err(ConvertError::Unsupported(format!(
            "`n` > 1 cannot be translated for an upstream of format {}; send one request per choice",
            to.label()
        )));
    }
    if from != to && asks_logprobs(from, &obj) {
        // No encoder carries log probabilities back: a client reading `logprobs.content` would
        // get `null`, and fail there with no word of why.
        return Err(ConvertError::Unsupported(format!(
            "log probabilities cannot be translated for an upstream of format {}",
            to.label()
        )));
    }
    if let Some(fetched) = &opts.fetched_media {
        ir.inline_media(fetched);
    }
    if to != WireFormat::Gemini {
        // A Gemini file (`gs://`, a Files API URI) is readable by Gemini alone, with its key:
        // another vendor would be sent a URL it cannot fetch.
        if let Some(url) = ir.media_urls().into_iter().find(|u| is_gemini_file(u)) {
            return Err(ConvertError::Unsupported(format!(
                "`{url}` is a Gemini file, which only a Gemini upstream can read"
            )));
        }
    }
    if to.vendor() == Vendor::OpenAi && from.vendor() != Vendor::OpenAi {
        fit_for_openai(&mut ir, &opts.model)?;
    }
    let names = ToolNames::for_request(to, &mut ir);
    let out = match to {
        WireFormat::OpenAiChat => openai_chat::request::render(&ir, opts)?,
        WireFormat::OpenAiResponses => responses_api::request::render(&ir, opts)?,
        WireFormat::Anthropic => anthropic::request::render(&ir, opts)?,
        WireFormat::Gemini => gemini::request::render(&ir, opts)?,
    };
    let body = serde_json::to_vec(&out).map_err(|e| ConvertError::Invalid(e.to_string()))?;
    Ok(Translated {
        body: Bytes::from(body),
        tool_names: names,
        json_mode: to == WireFormat::Anthropic
            && anthropic::request::answers_in_json_tool(&ir.response_format, &opts.model),
    })
}

/// Whether `url` names a file Gemini keeps (Cloud Storage, the Files API), which Gemini reads
/// itself and nobody else can.
fn is_gemini_file(url: &str) -> bool {
    ["gs://", "https://generativelanguage.googleapis.com/"]
        .iter()
        .any(|p| url.starts_with(p))
}

/// The URLs of images and files a `to` upstream cannot fetch itself, which the gateway must fetch
/// and send inline (formats.md: Gemini takes `fileData` only for `gs://` and Files-API URIs). Empty
/// for every other pair, and for bodies that name no media by URL.
pub fn media_to_fetch(from: WireFormat, to: WireFormat, body: &[u8]) -> Result<Vec<String>, ConvertError> {
    if to != WireFormat::Gemini || from == to || memchr::memmem::find(body, b"://").is_none() {
        return Ok(Vec::new());
    }
    let ir = parse_request(from, &super::json::parse_object(body)?)?;
    let mut seen = std::collections::HashSet::new();
    let urls = ir
        .media_urls()
        .into_iter()
        .filter(|url| !is_gemini_file(url) && seen.insert(*url))
        .map(str::to_string)
        .collect();
    Ok(urls)
}

/// A client body (an object) of format `from` in the IR.
fn parse_request(from: WireFormat, obj: &Value) -> Result<IrRequest, ConvertError> {
    match from {
        WireFormat::OpenAiChat => openai_chat::request::parse(obj),
        WireFormat::OpenAiResponses => responses_api::request::parse(obj),
        WireFormat::Anthropic => anthropic::request::parse(obj),
        WireFormat::Gemini => gemini::request::parse(obj),
    }
}

/// Parses a whole upstream response into the IR.
pub fn parse_response(from: WireFormat, body: &[u8]) -> Result<IrResponse, ConvertError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ConvertError::Invalid(format!("The upstream response is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(ConvertError::Invalid(
            "The upstream response is not a JSON object".into(),
        ));
    }
    Ok(match from {
        WireFormat::OpenAiChat => openai_chat::response::parse(&v)?,
        WireFormat::OpenAiResponses => responses_api::response::parse(&v)?,
        WireFormat::Anthropic => anthropic::response::parse(&v)?,
        WireFormat::Gemini => gemini::response::parse(&v)?,
    })
}

/// Whether the client asks for log probabilities: Chat's `logprobs: true`, Responses'
/// `top_logprobs` or `include` of `message.output_text.logprobs`, Gemini's `responseLogprobs`.
fn asks_logprobs(from: WireFormat, obj: &Value) -> bool {
    match from {
        WireFormat::OpenAiChat => obj.get("logprobs") == Some(&Value::Bool(true)),
        WireFormat::OpenAiResponses => {
            obj.get("top_logprobs").and_then(Value::as_u64).is_some_and(|n| n > 0)
                || obj
                    .get("include")
                    .and_then(Value::as_array)
                    .is_some_and(|i| i.iter().any(|v| v == "message.output_text.logprobs"))
        }
        WireFormat::Gemini => {
            obj.get("generationConfig")
                .or_else(|| obj.get("generation_config"))
                .and_then(|g| g.get("responseLogprobs").or_else(|| g.get("response_logprobs")))
                == Some(&Value::Bool(true))
        }
        WireFormat::Anthropic => false,
    }
}

/// OpenAI's `user` takes at most this many characters (a longer one is a 400).
const OPENAI_USER_MAX: usize = 64;

/// What another vendor's client sends in a shape OpenAI refuses: Claude Code's `metadata.user_id`
/// (a ~150-character JSON blob) becomes its SHA-256 (one stable id per user, 64 hex digits), and
/// Claude's or Gemini's thinking asks an effort only of models known to take `reasoning_effort`
/// (gpt-4.1 and gpt-4o refuse it, as do Mistral's, grok-4 and Groq's Llama models; Claude Code
/// and Gemini CLI turn thinking on by default). An OpenAI client's own values are never changed:
/// it chose them for its model.
fn fit_for_openai(ir: &mut IrRequest, model: &str) -> Result<(), ConvertError> {
    if let Some(user) = ir.user.as_mut().filter(|u| u.chars().count() > OPENAI_USER_MAX) {
        let digest = ring::digest::digest(&ring::digest::SHA256, user.as_bytes());
        *user = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    }
    let name = super::model_name::bare(model);
    if !takes_reasoning_effort(&name) {
        ir.reasoning = None;
    }
    if openai_reasoning_model(&name) {
        // OpenAI's reasoning models refuse any sampling setting but the default ("Unsupported
        // parameter: 'top_p' is not supported with this model"), which Gemini CLI and Anthropic
        // SDK apps send for every model: left for the model's own.
        ir.temperature = ir.temperature.filter(|t| *t == 1.0);
        ir.top_p = ir.top_p.filter(|p| *p == 1.0);
        ir.presence_penalty = ir.presence_penalty.filter(|p| *p == 0.0);
        ir.frequency_penalty = ir.frequency_penalty.filter(|p| *p == 0.0);
        if !ir.stop.is_empty() {
            // Refused too ("'stop' is not supported with this model"); dropped, the answer would
            // run past where the client's agent loop cuts it (LangChain's `\nObservation:`).
            return Err(ConvertError::Unsupported(
                "stop sequences cannot be sent to an OpenAI reasoning model".into(),
            ));
        }
    }
    Ok(())
}

/// OpenAI's own reasoning models (`o1`…, `gpt-5*` but the `-chat` ones, `codex-*`), by bare name.
fn openai_reasoning_model(name: &str) -> bool {
    super::model_name::is_o_series(name)
        || (name.starts_with("gpt-5") && !name.contains("-chat"))
        || name.starts_with("codex")
}

/// Models known to take `reasoning_effort` through an OpenAI-style API: OpenAI's reasoning models
/// (`o1`…, `gpt-5*`, `codex-*`), `gpt-oss`, xAI's `grok-3-mini`, and Gemini 2.5 and later on
/// Google's OpenAI endpoint; by bare name (without an aggregator's `vendor/` prefix).
fn takes_reasoning_effort(name: &str) -> bool {
    super::model_name::is_o_series(name)
        || ["gpt-5", "gpt-oss", "codex", "grok-3-mini", "gemini-2.5", "gemini-3"]
            .iter()
            .any(|p| name.starts_with(p))
}

/// Whole upstream response (format `from`) → client format `to`; `model` is the name the client asked for.
pub fn convert_response(
    from: WireFormat,
    to: WireFormat,
    body: &[u8],
    model: &str,
) -> Result<(Bytes, Option<Usage>), ConvertError> {
    convert_response_named(from, to, body, model, None)
}

/// As `convert_response`, giving tool calls back the client's names the request was renamed from.
pub fn convert_response_named(
    from: WireFormat,
    to: WireFormat,
    body: &[u8],
    model: &str,
    names: Option<&ToolNames>,
) -> Result<(Bytes, Option<Usage>), ConvertError> {
    let mut ir = parse_response(from, body)?;
    if let Some(names) = names {
        names.restore(&mut ir);
    }
    if matches!(to, WireFormat::Anthropic | WireFormat::Gemini) {
        unreadable_arguments(&mut ir)?;
    }
    let out = match to {
        WireFormat::OpenAiChat => openai_chat::response::render(&ir, model),
        WireFormat::OpenAiResponses => responses_api::response::render(&ir, model),
        WireFormat::Anthropic => anthropic::response::render(&ir, model),
        WireFormat::Gemini => gemini::response::render(&ir, model),
    };
    let bytes = serde_json::to_vec(&out).map_err(|e| ConvertError::Invalid(e.to_string()))?;
    Ok((Bytes::from(bytes), ir.usage))
}

/// Anthropic's and Gemini's clients get a tool call's arguments as an object: arguments text that
/// is no JSON object (two objects run together, as some tool parsers emit) would reach them as
/// `{}`, and the tool would run without its arguments. An answer cut by its token limit may end
/// with such a call: it is left out instead (the finish says the answer was cut). Any other is no
/// answer, so another upstream (or another try) is asked.
fn unreadable_arguments(ir: &mut IrResponse) -> Result<(), ConvertError> {
    let unreadable = |b: &Block| match b {
        // `null` (a tool without parameters, as some servers send it) is taken as `{}`.
        Block::ToolCall(c) => {
            !c.arguments.trim().is_empty()
                && !matches!(serde_json::from_str(&c.arguments), Ok(Value::Object(_) | Value::Null))
        }
        _ => false,
    };
    match ir.content.iter().find(|b| unreadable(b)) {
        None => Ok(()),
        Some(_) if ir.finish == FinishReason::Length => {
            ir.content.retain(|b| !unreadable(b));
            Ok(())
        }
        Some(b) => Err(ConvertError::Invalid(format!(
            "the arguments of the tool call `{}` are not a JSON object",
            match b {
                Block::ToolCall(c) => c.name.as_str(),
                _ => "",
            }
        ))),
    }
}

/// Usage from a whole response body of any format.
pub fn extract_usage(format: WireFormat, body: &[u8]) -> Option<Usage> {
    let raw = match usage_at_tail(format, body) {
        Some(raw) => raw,
        None => usage_by_parsing(format, body)?,
    };
    usage_of(format, raw)
}

/// The usage of an answer of which only the end is at hand (one too large to keep whole), when it
/// is there, in the top-level object (see `usage_at_tail`).
pub fn extract_usage_at_end(format: WireFormat, end: &[u8]) -> Option<Usage> {
    usage_of(format, usage_at_tail(format, end)?)
}

fn usage_of(format: WireFormat, raw: &serde_json::value::RawValue) -> Option<Usage> {
    // OpenAI Chat's, on every same-format answer: read into its own shape, no map built.
    if format == WireFormat::OpenAiChat {
        if let Ok(u) = serde_json::from_str::<ChatUsage>(raw.get()) {
            return Some(u.into());
        }
    }
    let v: Value = serde_json::from_str(raw.get()).ok()?;
    match format {
        WireFormat::OpenAiChat => Usage::from_openai_chat(&v),
        WireFormat::OpenAiResponses => Usage::from_responses(&v),
        WireFormat::Anthropic => Usage::from_anthropic(&v),
        WireFormat::Gemini => Usage::from_gemini(&v),
    }
}

/// OpenAI Chat's `usage` as `Usage::from_openai_chat` reads it (anything else in it ignored; a
/// count that is not a whole number falls back to that reading).
#[derive(serde::Deserialize)]
struct ChatUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<ChatUsageDetails>,
    #[serde(default)]
    completion_tokens_details: Option<ChatUsageDetails>,
}

#[derive(serde::Deserialize)]
struct ChatUsageDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl From<ChatUsage> for Usage {
    fn from(u: ChatUsage) -> Usage {
        Usage {
            input_tokens: u.prompt_tokens.unwrap_or(0),
            output_tokens: u.completion_tokens.unwrap_or(0),
            cached_input_tokens: u.prompt_tokens_details.and_then(|d| d.cached_tokens).unwrap_or(0),
            cache_creation_input_tokens: u.cache_creation_input_tokens.unwrap_or(0),
            reasoning_tokens: u
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

static USAGE_KEYS: LazyLock<[FinderRev<'static>; 1]> = LazyLock::new(|| [FinderRev::new("\"usage\"")]);
static GEMINI_USAGE_KEYS: LazyLock<[FinderRev<'static>; 2]> = LazyLock::new(|| {
    [
        FinderRev::new("\"usageMetadata\""),
        FinderRev::new("\"usage_metadata\""),
    ]
});

/// The usage member found without reading the whole answer: providers put it last or nearly last,
/// so the last `"usage":` key is read, and taken only when the members after it close the object
/// that ends the document — then it is a member of the top-level object, not of a nested one
/// (inside a JSON string the key's quotes would be escaped). Anything else: `None`.
fn usage_at_tail(format: WireFormat, body: &[u8]) -> Option<&serde_json::value::RawValue> {
    let keys: &[FinderRev<'static>] = match format {
        WireFormat::Gemini => &GEMINI_USAGE_KEYS[..],
        _ => &USAGE_KEYS[..],
    };
    let (at, key) = keys
        .iter()
        .filter_map(|k| k.rfind(body).map(|at| (at, k.needle().len())))
        .max()?;
    let rest = body[at + key..].trim_ascii_start().strip_prefix(b":")?;
    let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<&serde_json::value::RawValue>();
    let raw = values.next()?.ok()?;
    let after = rest[values.byte_offset()..].trim_ascii();
    let closes_document = match after.strip_prefix(b",") {
        // The members after it, as an object of their own, must end exactly at the document's end.
        Some(members) => {
            let mut object = Vec::with_capacity(members.len() + 1);
            object.push(b'{');
            object.extend_from_slice(members);
            serde_json::from_slice::<serde::de::IgnoredAny>(&object).is_ok()
        }
        None => after == b"}",
    };
    closes_document.then_some(raw)
}

/// The usage member of the top-level object, the whole answer parsed (only the usage is built).
fn usage_by_parsing(format: WireFormat, body: &[u8]) -> Option<&serde_json::value::RawValue> {
    #[derive(serde::Deserialize)]
    struct Top<'a> {
        #[serde(borrow, default)]
        usage: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow, default, rename = "usageMetadata", alias = "usage_metadata")]
        usage_metadata: Option<&'a serde_json::value::RawValue>,
    }
    let top: Top = serde_json::from_slice(body).ok()?;
    match format {
        WireFormat::Gemini => top.usage_metadata,
        _ => top.usage,
    }
}

/// A rough input-token estimate for a request body (≈4 bytes a token), never 0. Anthropic clients need a
/// non-zero `message_start.usage.input_tokens` before an OpenAI upstream reports the real count (§4.3).
pub fn estimate_input_tokens(body: &[u8]) -> u64 {
    (body.len() as u64 / 4).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENAI: &[u8] = br#"{"id":"c1","choices":[{"index":0,"message":{"role":"assistant","content":"a \"usage\": {\"prompt_tokens\": 99} b"}}],
        "usage" : {"prompt_tokens":9,"completion_tokens":4,"total_tokens":13},
        "service_tier":"default","system_fingerprint":"fp_1"}"#;

    #[test]
    fn usage_is_read_at_the_tail_when_it_belongs_to_the_top_level_object() {
        let raw = usage_at_tail(WireFormat::OpenAiChat, OPENAI).expect("read at the tail");
        assert!(raw.get().contains("\"prompt_tokens\":9"));
        let u = extract_usage(WireFormat::OpenAiChat, OPENAI).unwrap();
        assert_eq!((u.input_tokens, u.output_tokens), (9, 4));
        let gemini = br#"{"candidates":[],"usage_metadata":{"prompt_token_count":3,"candidates_token_count":2},"modelVersion":"g"}"#;
        assert!(usage_at_tail(WireFormat::Gemini, gemini).is_some());
        assert_eq!(extract_usage(WireFormat::Gemini, gemini).unwrap().output_tokens, 2);
    }

    /// What upstreams get wrong in whole answers reaches another format's client as what it
    /// means, never as an empty finished turn, a tool run without its arguments, or arguments
    /// encoded twice.
    #[test]
    fn answers_that_say_less_than_they_seem_are_read_for_what_they_are() {
        use serde_json::json;
        let answer = |from, to, body: serde_json::Value| {
            convert_response(from, to, body.to_string().as_bytes(), "m")
                .map(|(b, _)| serde_json::from_slice::<serde_json::Value>(&b).unwrap())
        };
        let chat = |message: serde_json::Value, finish: &str| json!({"id": "c", "choices": [{"index": 0, "message": message, "finish_reason": finish}]});
        let call = |args: &str| {
            json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "run", "arguments": args}}]})
        };
        // Two objects run together: no answer for an Anthropic client (another try is asked).
        let twice = r#"{"cmd":"ls"}{"cmd":"pwd"}"#;
        assert!(answer(
            WireFormat::OpenAiChat,
            WireFormat::Anthropic,
            chat(call(twice), "tool_calls")
        )
        .is_err());
        assert!(answer(
            WireFormat::OpenAiChat,
            WireFormat::Gemini,
            chat(call(twice), "tool_calls")
        )
        .is_err());
        // The Chat client reads arguments text itself: passed on.
        assert!(answer(
            WireFormat::OpenAiChat,
            WireFormat::OpenAiResponses,
            chat(call(twice), "tool_calls")
        )
        .is_ok());
        // Cut by the token limit: the half call is left out, the finish says why.
        let cut = answer(
            WireFormat::OpenAiChat,
            WireFormat::Anthropic,
            chat(call(r#"{"cmd":"l"#), "length"),
        )
        .unwrap();
        assert_eq!(cut["stop_reason"], "max_tokens", "{cut}");
        assert!(
            cut["content"]
                .as_array()
                .unwrap()
                .iter()
                .all(|b| b["type"] != "tool_use"),
            "{cut}"
        );
        // A finish that says tool calls with none in the answer is a stop.
        let none = answer(
            WireFormat::OpenAiChat,
            WireFormat::Anthropic,
            chat(json!({"role": "assistant", "content": "done"}), "tool_calls"),
        )
        .unwrap();
        assert_eq!(none["stop_reason"], "end_turn", "{none}");
        // The legacy `function_call` is a tool call.
        let legacy = json!({"role": "assistant", "content": null, "function_call": {"name": "run", "arguments": "{\"cmd\":\"ls\"}"}});
        let legacy = answer(
            WireFormat::OpenAiChat,
            WireFormat::Anthropic,
            chat(legacy, "function_call"),
        )
        .unwrap();
        assert_eq!(legacy["stop_reason"], "tool_use", "{legacy}");
        assert_eq!(legacy["content"][0]["input"], json!({"cmd": "ls"}), "{legacy}");
        // `"function_call": null` (LiteLLM's, on every answer) is no call; `null` arguments are `{}`.
        let nulls = json!({"role": "assistant", "content": "plain", "function_call": null, "tool_calls": null});
        let plain = answer(WireFormat::OpenAiChat, WireFormat::Anthropic, chat(nulls, "stop")).unwrap();
        assert_eq!(plain["stop_reason"], "end_turn", "{plain}");
        assert_eq!(plain["content"].as_array().map(Vec::len), Some(1), "{plain}");
        let no_params = answer(
            WireFormat::OpenAiChat,
            WireFormat::Anthropic,
            chat(call("null"), "tool_calls"),
        )
        .unwrap();
        assert_eq!(no_params["content"][0]["input"], json!({}), "{no_params}");
        // DeepSeek's cut for want of resources is a cut answer, not a finished one.
        let starved = answer(
            WireFormat::OpenAiChat,
            WireFormat::Anthropic,
            chat(
                json!({"role": "assistant", "content": "par"}),
                "insufficient_system_resource",
            ),
        )
        .unwrap();
        assert_eq!(starved["stop_reason"], "max_tokens");
        // Anthropic-style input sent as a string is not encoded a second time; null is `{}`.
        let input = |input: serde_json::Value| {
            json!({"id": "msg", "type": "message", "role": "assistant", "model": "m",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "run", "input": input}], "stop_reason": "tool_use"})
        };
        let args = |v: serde_json::Value| v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"].clone();
        let s = answer(WireFormat::Anthropic, WireFormat::OpenAiChat, input(json!("{\"a\":1}"))).unwrap();
        assert_eq!(args(s), "{\"a\":1}");
        let n = answer(
            WireFormat::Anthropic,
            WireFormat::OpenAiChat,
            input(serde_json::Value::Null),
        )
        .unwrap();
        assert_eq!(args(n), "{}");
        // Gemini: a failed tool call with nothing said is no answer; no candidate without a block
        // reason is no answer either, with one it is the prompt filtered.
        let malformed =
            json!({"candidates": [{"content": {"role": "model"}, "finishReason": "MALFORMED_FUNCTION_CALL"}]});
        assert!(answer(WireFormat::Gemini, WireFormat::Anthropic, malformed).is_err());
        assert!(answer(
            WireFormat::Gemini,
            WireFormat::OpenAiChat,
            json!({"usageMetadata": {"promptTokenCount": 3}})
        )
        .is_err());
        for blocked in [
            json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}}),
            json!({"prompt_feedback": {"block_reason": "SAFETY"}}),
        ] {
            let blocked = answer(WireFormat::Gemini, WireFormat::OpenAiChat, blocked).unwrap();
            assert_eq!(blocked["choices"][0]["finish_reason"], "content_filter");
        }
    }

    /// `body` (format `from`) translated for a `to` upstream, or why it cannot be.
    fn translated(from: WireFormat, to: WireFormat, body: &serde_json::Value) -> Result<Bytes, ConvertError> {
        translated_for("m", from, to, body)
    }

    /// As `translated`, for an upstream model of this name.
    fn translated_for(
        model: &str,
        from: WireFormat,
        to: WireFormat,
        body: &serde_json::Value,
    ) -> Result<Bytes, ConvertError> {
        let opts = RequestOptions {
            model: model.into(),
            stream: false,
            default_max_tokens: 4096,
            fetched_media: None,
            stream_usage: true,
            replay_reasoning: false,
        };
        convert_request(from, to, body.to_string().as_bytes(), &opts)
    }

    /// As `translated_for`, read back as JSON.
    fn translated_json(model: &str, from: WireFormat, to: WireFormat, body: &serde_json::Value) -> serde_json::Value {
        serde_json::from_slice(&translated_for(model, from, to, body).expect("translated")).unwrap()
    }

    /// `body` (format `from`) as sent to a `to` upstream.
    fn upstream_body(from: WireFormat, to: WireFormat, body: serde_json::Value) -> serde_json::Value {
        let out = translated(from, to, &body).expect("translated");
        serde_json::from_slice(&out).unwrap()
    }

    /// Claude Code's request shape: a long `metadata.user_id`, thinking on, a strict tool with
    /// an optional property.
    fn claude_code_body() -> serde_json::Value {
        let user_id = r#"{"device_id":"4f1c0b6a1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccdd","account_uuid":"0b7c7e55-3c1e-4a55-9f0e-5a1b2c3d4e5f","session_id":"9a8b7c6d-1e2f-4a3b-8c9d-0e1f2a3b4c5d"}"#;
        serde_json::json!({"model": "c", "max_tokens": 32000, "metadata": {"user_id": user_id},
            "thinking": {"type": "enabled", "budget_tokens": 31999},
            "tools": [{"name": "get_weather", "strict": true, "input_schema": {"type": "object",
                "additionalProperties": false, "required": ["city"],
                "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}}}],
            "messages": [{"role": "user", "content": "hi"}]})
    }

    #[test]
    fn claude_code_requests_are_ones_openai_takes() {
        let body = claude_code_body();
        for to in [WireFormat::OpenAiChat, WireFormat::OpenAiResponses] {
            let v: serde_json::Value =
                serde_json::from_slice(&translated_for("gpt-4.1", WireFormat::Anthropic, to, &body).unwrap()).unwrap();
            let user = v["user"].as_str().unwrap();
            assert_eq!(user.len(), 64, "OpenAI takes at most 64: {user}");
            assert!(user.bytes().all(|b| b.is_ascii_hexdigit()));
            assert!(
                v.get("reasoning_effort").is_none() && v.get("reasoning").is_none(),
                "gpt-4.1 refuses it: {v}"
            );
            let tool = &v["tools"][0];
            assert!(tool.pointer("/function/strict").is_none_or(|s| s == false), "{tool}");
            assert!(tool.get("strict").is_none_or(|s| s == false), "{tool}");
            // The same user is the same id; a reasoning model keeps the effort.
            let again: serde_json::Value =
                serde_json::from_slice(&translated_for("o4-mini", WireFormat::Anthropic, to, &body).unwrap()).unwrap();
            assert_eq!(again["user"], v["user"]);
            let effort = again
                .get("reasoning_effort")
                .or_else(|| again.pointer("/reasoning/effort"));
            assert_eq!(effort.and_then(|e| e.as_str()), Some("high"), "{again}");
        }
        let short = serde_json::json!({"model": "c", "max_tokens": 10, "metadata": {"user_id": "user-123"},
            "messages": [{"role": "user", "content": "hi"}]});
        let v = upstream_body(WireFormat::Anthropic, WireFormat::OpenAiChat, short);
        assert_eq!(v["user"], "user-123", "a short id goes as it is");
    }

    /// OpenAI's models take `max_completion_tokens` (its reasoning models refuse `max_tokens`);
    /// other OpenAI-style servers `max_tokens` (Mistral refuses the newer name).
    #[test]
    fn the_output_limit_goes_by_the_name_the_upstream_takes() {
        let body =
            serde_json::json!({"model": "c", "max_tokens": 300, "messages": [{"role": "user", "content": "hi"}]});
        for (model, key) in [
            ("gpt-5", "max_completion_tokens"),
            ("o3-mini", "max_completion_tokens"),
            ("openai/gpt-4o", "max_completion_tokens"),
            ("mistral-large-latest", "max_tokens"),
            ("deepseek-chat", "max_tokens"),
        ] {
            let out = translated_for(model, WireFormat::Anthropic, WireFormat::OpenAiChat, &body).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v[key], 300, "{model}: {v}");
            let other = if key == "max_tokens" {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            assert!(v.get(other).is_none(), "{model}: {v}");
        }
    }

    #[test]
    fn models_that_take_an_effort_are_told_apart_by_name() {
        let taking = [
            "o1",
            "o3-mini",
            "gpt-5",
            "gpt-5.1-codex",
            "gpt-oss-120b",
            "openai/o3",
            "grok-3-mini",
            "gemini-2.5-flash",
        ];
        for m in taking {
            assert!(takes_reasoning_effort(&crate::formats::model_name::bare(m)), "{m}");
        }
        let refusing = [
            "gpt-4.1",
            "gpt-4o-mini",
            "openai/gpt-4o",
            "ministral-8b",
            "grok-4-latest",
            "llama-3.3-70b",
        ];
        for m in refusing {
            assert!(!takes_reasoning_effort(&crate::formats::model_name::bare(m)), "{m}");
        }
    }

    /// Chat's `file` part takes PDF only: a plain-text document goes as text, another file is
    /// refused (so another candidate may take it) rather than sent to OpenAI's 400.
    #[test]
    fn chat_upstreams_get_pdf_files_text_as_text_and_no_other_file() {
        use serde_json::json;
        let doc = |source: serde_json::Value| {
            json!({"model": "c", "max_tokens": 100, "messages": [{"role": "user", "content": [
                {"type": "document", "source": source}, {"type": "text", "text": "summarise"}]}]})
        };
        let text = doc(json!({"type": "text", "media_type": "text/plain", "data": "hello notes"}));
        let v = upstream_body(WireFormat::Anthropic, WireFormat::OpenAiChat, text);
        assert_eq!(
            v["messages"][0]["content"][0],
            json!({"type": "text", "text": "hello notes"}),
            "{v}"
        );
        let pdf = doc(json!({"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}));
        let v = upstream_body(WireFormat::Anthropic, WireFormat::OpenAiChat, pdf);
        assert_eq!(v["messages"][0]["content"][0]["type"], "file", "{v}");
        let docx = doc(json!({"type": "base64", "data": "UEsDBA==",
            "media_type": "application/vnd.openxmlformats-officedocument.wordprocessingml.document"}));
        assert!(matches!(
            translated(WireFormat::Anthropic, WireFormat::OpenAiChat, &docx),
            Err(ConvertError::Unsupported(_))
        ));
    }

    #[test]
    fn a_file_by_url_goes_to_responses_by_url_and_is_refused_for_chat() {
        use serde_json::json;
        let doc = json!({"model": "c", "max_tokens": 100, "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "url", "url": "https://x.example/a.pdf"}},
            {"type": "text", "text": "summarise"}]}]});
        let v = upstream_body(WireFormat::Anthropic, WireFormat::OpenAiResponses, doc.clone());
        let part = &v["input"][0]["content"][0];
        assert_eq!(
            (&part["type"], &part["file_url"]),
            (&json!("input_file"), &json!("https://x.example/a.pdf")),
            "{v}"
        );
        assert!(part.get("file_data").is_none(), "{v}");
        let refused = translated(WireFormat::Anthropic, WireFormat::OpenAiChat, &doc);
        assert!(matches!(refused, Err(ConvertError::Unsupported(_))), "{refused:?}");
        // And back: a Responses client's file by URL reaches Anthropic by URL.
        let responses = json!({"model": "m", "input": [{"role": "user", "content": [
            {"type": "input_file", "file_url": "https://x.example/a.pdf"}]}]});
        let v = upstream_body(WireFormat::OpenAiResponses, WireFormat::Anthropic, responses);
        assert_eq!(
            v["messages"][0]["content"][0]["source"]["url"], "https://x.example/a.pdf",
            "{v}"
        );
    }

    /// A tool message carries text only: a PDF a tool returned (Claude Code's Read tool) follows in
    /// a user message instead of being lost.
    #[test]
    fn files_a_tool_returned_reach_a_chat_upstream_after_the_tool_message() {
        use serde_json::json;
        let body = json!({"model": "c", "max_tokens": 100, "messages": [
            {"role": "user", "content": "read it"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}}]}]}]});
        let v = upstream_body(WireFormat::Anthropic, WireFormat::OpenAiChat, body);
        let messages = v["messages"].as_array().unwrap();
        let tool = messages
            .iter()
            .position(|m| m["role"] == "tool")
            .expect("a tool message");
        let next = &messages[tool + 1];
        assert_eq!(next["role"], "user", "{v}");
        assert_eq!(
            next["content"][0]["file"]["file_data"], "data:application/pdf;base64,JVBERi0x",
            "{v}"
        );
    }

    /// Claude's structured output may leave properties optional, which OpenAI's strict mode
    /// refuses: it goes to OpenAI upstreams without `strict: true`.
    #[test]
    fn claude_output_schemas_go_to_openai_not_strict() {
        use serde_json::json;
        let body = json!({"model": "c", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}],
            "output_config": {"format": {"type": "json_schema", "schema": {"type": "object",
                "properties": {"a": {"type": "string"}, "b": {"type": "string"}}, "required": ["a"],
                "additionalProperties": false}}}});
        let v = upstream_body(WireFormat::Anthropic, WireFormat::OpenAiChat, body.clone());
        let format = &v["response_format"];
        assert_eq!(format["type"], "json_schema", "{v}");
        assert_ne!(format["json_schema"]["strict"], json!(true), "{v}");
        let v = upstream_body(WireFormat::Anthropic, WireFormat::OpenAiResponses, body);
        assert_eq!(v["text"]["format"]["type"], "json_schema", "{v}");
        assert_ne!(v["text"]["format"]["strict"], json!(true), "{v}");
    }

    #[test]
    fn a_gemini_upstream_gets_a_thinking_budget_every_model_takes() {
        use serde_json::json;
        let claude_code = json!({"model": "c", "max_tokens": 32000, "messages": [{"role": "user", "content": "hi"}],
            "thinking": {"type": "enabled", "budget_tokens": 31999}});
        let v = upstream_body(WireFormat::Anthropic, WireFormat::Gemini, claude_code);
        assert_eq!(v["generationConfig"]["thinkingConfig"]["thinkingBudget"], 24576, "{v}");
        let minimal =
            json!({"model": "m", "reasoning_effort": "minimal", "messages": [{"role": "user", "content": "hi"}]});
        let v = upstream_body(WireFormat::OpenAiChat, WireFormat::Gemini, minimal);
        assert_eq!(v["generationConfig"]["thinkingConfig"]["thinkingBudget"], 512, "{v}");
        // `none`: off where the model can stop thinking, its least where it cannot (2.5 Pro).
        let none = json!({"model": "m", "reasoning_effort": "none", "messages": [{"role": "user", "content": "hi"}]});
        let for_model = |model: &str| {
            let out = translated_for(model, WireFormat::OpenAiChat, WireFormat::Gemini, &none).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            v["generationConfig"]["thinkingConfig"]["thinkingBudget"].clone()
        };
        assert_eq!(for_model("gemini-2.5-flash"), 0);
        assert_eq!(for_model("gemini-2.5-pro"), 128);
    }

    #[test]
    fn a_responses_upstream_gets_non_strict_tools_and_at_least_16_output_tokens() {
        use serde_json::json;
        let body = json!({"model": "c", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": "read", "input_schema": {"type": "object",
                "properties": {"path": {"type": "string"}, "limit": {"type": "integer"}}, "required": ["path"]}}]});
        let v = upstream_body(WireFormat::Anthropic, WireFormat::OpenAiResponses, body);
        assert_eq!(v["tools"][0]["strict"], false, "{v}");
        assert_eq!(v["max_output_tokens"], 16, "{v}");
        let chat = json!({"model": "m", "max_tokens": 500, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "strict": true,
                "parameters": {"type": "object", "properties": {}}}}]});
        let v = upstream_body(WireFormat::OpenAiChat, WireFormat::OpenAiResponses, chat);
        assert_eq!(
            (&v["tools"][0]["strict"], &v["max_output_tokens"]),
            (&json!(true), &json!(500)),
            "{v}"
        );
    }

    #[test]
    fn thinking_is_left_out_of_a_tool_loop_whose_turn_has_no_claude_thinking() {
        use serde_json::json;
        let weather = json!({"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}});
        let loop_body = json!({"model": "claude", "reasoning_effort": "medium", "tools": [weather],
            "messages": [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "toolu_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"}]});
        let out = upstream_body(WireFormat::OpenAiChat, WireFormat::Anthropic, loop_body);
        assert!(out.get("thinking").is_none(), "{out}");
        // The first step of the loop (no tool turn yet) thinks.
        let first = json!({"model": "claude", "reasoning_effort": "medium", "tools": [weather],
            "messages": [{"role": "user", "content": "Weather in Paris?"}]});
        let out = upstream_body(WireFormat::OpenAiChat, WireFormat::Anthropic, first);
        assert_eq!(out["thinking"]["type"], "enabled", "{out}");
    }

    #[test]
    fn anthropic_s_max_effort_is_high_for_openai() {
        let body = serde_json::json!({"model": "c", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}],
            "thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}});
        let out = translated_for("o3", WireFormat::Anthropic, WireFormat::OpenAiChat, &body).unwrap();
        let out: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["reasoning_effort"], "high", "{out}");
    }

    #[test]
    fn tool_schemas_without_a_type_are_objects_for_anthropic() {
        use serde_json::json;
        let tool =
            |params: serde_json::Value| json!({"type": "function", "function": {"name": "now", "parameters": params}});
        let body = json!({"model": "c", "messages": [{"role": "user", "content": "hi"}],
            "tools": [tool(json!({})), tool(json!({"properties": {"tz": {"type": "string"}}}))]});
        let out = upstream_body(WireFormat::OpenAiChat, WireFormat::Anthropic, body);
        assert_eq!(out["tools"][0]["input_schema"]["type"], "object", "{out}");
        assert_eq!(out["tools"][1]["input_schema"]["type"], "object", "{out}");
        assert_eq!(out["tools"][1]["input_schema"]["properties"]["tz"]["type"], "string");
    }

    #[test]
    fn an_openai_effort_reaches_an_openai_upstream_as_sent() {
        use serde_json::json;
        for effort in ["none", "minimal", "low", "high", "xhigh"] {
            let body = json!({"model": "g", "input": "hi", "reasoning": {"effort": effort}});
            let out = upstream_body(WireFormat::OpenAiResponses, WireFormat::OpenAiChat, body);
            assert_eq!(out["reasoning_effort"], effort);
            let body =
                json!({"model": "g", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": effort});
            let out = upstream_body(WireFormat::OpenAiChat, WireFormat::OpenAiResponses, body);
            assert_eq!(out["reasoning"]["effort"], effort);
        }
    }

    #[test]
    fn an_image_a_tool_returned_reaches_gemini_and_responses_upstreams() {
        use serde_json::json;
        let body = json!({"model": "c", "max_tokens": 100, "messages": [
            {"role": "user", "content": "Read the chart"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "a.png"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                {"type": "text", "text": "a.png"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}]}]}]});
        let out = upstream_body(WireFormat::Anthropic, WireFormat::Gemini, body.clone());
        let parts = &out["contents"][2]["parts"];
        assert!(parts[0].get("functionResponse").is_some(), "{out}");
        assert_eq!(
            parts[1]["inlineData"],
            json!({"mimeType": "image/png", "data": "iVBOR"}),
            "{out}"
        );
        let out = upstream_body(WireFormat::Anthropic, WireFormat::OpenAiResponses, body);
        let output = out["input"]
            .as_array()
            .and_then(|items| items.iter().find(|i| i["type"] == "function_call_output"))
            .map(|i| i["output"].clone())
            .unwrap_or_default();
        assert_eq!(output[0], json!({"type": "input_text", "text": "a.png"}), "{out}");
        assert_eq!(output[1]["type"], "input_image", "{out}");
        assert_eq!(output[1]["image_url"], "data:image/png;base64,iVBOR", "{out}");
    }

    #[test]
    fn json_mode_leaves_the_client_s_tools_callable_on_anthropic() {
        use serde_json::json;
        let weather =
            json!({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}});
        let body = json!({"model": "c", "messages": [{"role": "user", "content": "Weather in Paris as JSON"}],
            "tools": [weather], "tool_choice": "auto", "response_format": {"type": "json_object"}});
        let out = upstream_body(WireFormat::OpenAiChat, WireFormat::Anthropic, body);
        assert_eq!(out["tool_choice"]["type"], "auto", "{out}");
        assert!(out["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "json_tool_call"));
        // Without tools of its own, the JSON tool is forced: it is the answer.
        let body = json!({"model": "c", "messages": [{"role": "user", "content": "JSON please"}],
            "response_format": {"type": "json_object"}});
        let out = upstream_body(WireFormat::OpenAiChat, WireFormat::Anthropic, body);
        assert_eq!(out["tool_choice"], json!({"type": "tool", "name": "json_tool_call"}));
    }

    #[test]
    fn no_tool_choice_stays_plain_without_parallel_calls() {
        use serde_json::json;
        let body = json!({"model": "c", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": "none", "parallel_tool_calls": false});
        let out = upstream_body(WireFormat::OpenAiChat, WireFormat::Anthropic, body);
        assert_eq!(out["tool_choice"], json!({"type": "none"}));
        let body = json!({"model": "c", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "parallel_tool_calls": false});
        let out = upstream_body(WireFormat::OpenAiChat, WireFormat::Anthropic, body);
        assert_eq!(
            out["tool_choice"],
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
    }

    #[test]
    fn a_jpg_data_url_is_image_jpeg() {
        let body = serde_json::json!({"model": "c", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/4A"}}]}]});
        let out = upstream_body(WireFormat::OpenAiChat, WireFormat::Anthropic, body);
        assert_eq!(
            out["messages"][0]["content"][0]["source"]["media_type"], "image/jpeg",
            "{out}"
        );
    }

    #[test]
    fn only_media_a_gemini_upstream_cannot_fetch_is_fetched() {
        let image = |url: &str| serde_json::json!({"type": "image_url", "image_url": {"url": url}});
        let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": [
            image("https://example.com/a.png"),
            image("gs://bucket/b.png"),
            image("https://generativelanguage.googleapis.com/v1beta/files/abc"),
            image("data:image/png;base64,AAAA"),
            image("https://example.com/a.png"),
        ]}]})
        .to_string();
        let urls = media_to_fetch(WireFormat::OpenAiChat, WireFormat::Gemini, body.as_bytes()).unwrap();
        assert_eq!(urls, ["https://example.com/a.png"]);
        for to in [
            WireFormat::Anthropic,
            WireFormat::OpenAiResponses,
            WireFormat::OpenAiChat,
        ] {
            let none = media_to_fetch(WireFormat::OpenAiChat, to, body.as_bytes()).unwrap();
            assert!(none.is_empty(), "{to:?} fetches URLs itself");
        }
    }

    #[test]
    fn a_nested_usage_is_never_taken_for_the_answer_s_own() {
        // The last `"usage":` belongs to a nested object: the whole answer is parsed instead.
        let nested_last = br#"{"usage":{"prompt_tokens":5,"completion_tokens":1},
            "choices":[{"message":{"usage":{"prompt_tokens":77}},"x":1}],"tail":{"usage":{"prompt_tokens":88}}}"#;
        assert!(usage_at_tail(WireFormat::OpenAiChat, nested_last).is_none());
        assert_eq!(
            extract_usage(WireFormat::OpenAiChat, nested_last).unwrap().input_tokens,
            5
        );
        let only_nested = br#"{"choices":[{"usage":{"prompt_tokens":77}}]}"#;
        assert!(usage_at_tail(WireFormat::OpenAiChat, only_nested).is_none());
        assert_eq!(extract_usage(WireFormat::OpenAiChat, only_nested), None);
        let nested_with_members = br#"{"a":{"usage":{"prompt_tokens":77},"b":{"c":1}},"d":2}"#;
        assert!(usage_at_tail(WireFormat::OpenAiChat, nested_with_members).is_none());
        // "usage" as a value, not a key.
        let value = br#"{"usage":{"prompt_tokens":6},"kind":"usage"}"#;
        assert_eq!(extract_usage(WireFormat::OpenAiChat, value).unwrap().input_tokens, 6);
        assert_eq!(extract_usage(WireFormat::OpenAiChat, br#"{"usage":null}"#), None);
    }

    /// An answer from `from`, as a `to` client gets it.
    fn answer_as(from: WireFormat, to: WireFormat, answer: serde_json::Value) -> serde_json::Value {
        let (out, _) = convert_response(from, to, answer.to_string().as_bytes(), "m").expect("converted");
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn tool_calls_with_empty_ids_get_ids_of_their_own() {
        use serde_json::json;
        // LM Studio: `"id": ""` on every call of a whole answer.
        let call = |name: &str| json!({"id": "", "type": "function", "function": {"name": name, "arguments": "{}"}});
        let answer = json!({"choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": null, "tool_calls": [call("a"), call("b")]}}]});
        let out = answer_as(WireFormat::OpenAiChat, WireFormat::Anthropic, answer.clone());
        let ids: Vec<&str> = out["content"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|b| b["id"].as_str())
            .collect();
        assert_eq!(ids.len(), 2, "{out}");
        assert!(
            ids[0] != ids[1] && ids.iter().all(|id| id.len() > "toolu_".len()),
            "{ids:?}"
        );
        let out = answer_as(WireFormat::OpenAiChat, WireFormat::OpenAiResponses, answer);
        let ids: Vec<&str> = out["output"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|b| b["call_id"].as_str())
            .collect();
        assert!(ids.len() == 2 && ids[0] != ids[1] && !ids.contains(&""), "{out}");
        // And an Anthropic tool_use without one.
        let answer = json!({"type": "message", "role": "assistant", "stop_reason": "tool_use",
            "content": [{"type": "tool_use", "id": "", "name": "a", "input": {}}]});
        let out = answer_as(WireFormat::Anthropic, WireFormat::OpenAiChat, answer);
        let id = out["choices"][0]["message"]["tool_calls"][0]["id"].as_str().unwrap();
        assert!(!id.is_empty(), "{out}");
    }

    #[test]
    fn whitespace_alone_is_no_text_block_for_anthropic() {
        use serde_json::json;
        // Qwen, GLM, DeepSeek: "\n\n" beside a tool call. Anthropic refuses such a block sent back.
        let answer = json!({"choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": "\n\n", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "a", "arguments": "{}"}}]}}]});
        let out = answer_as(WireFormat::OpenAiChat, WireFormat::Anthropic, answer);
        let kinds: Vec<&str> = out["content"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|b| b["type"].as_str())
            .collect();
        assert_eq!(kinds, ["tool_use"], "{out}");
        // A history carrying one (a Chat client's, or a Claude client's from elsewhere) goes to
        // Anthropic without it.
        let history = json!({"model": "m", "messages": [
            {"role": "system", "content": " "},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "\n\n", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "a", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "ok"}]});
        let sent = upstream_body(WireFormat::OpenAiChat, WireFormat::Anthropic, history);
        assert!(sent.get("system").is_none(), "{sent}");
        assert_eq!(sent["messages"][1]["content"].as_array().unwrap().len(), 1, "{sent}");
        assert_eq!(sent["messages"][1]["content"][0]["type"], "tool_use");
    }

    #[test]
    fn a_json_mode_answer_is_the_tool_s_input_alone() {
        use serde_json::json;
        let answer = json!({"type": "message", "role": "assistant", "stop_reason": "tool_use", "content": [
            {"type": "text", "text": "Here is the result:"},
            {"type": "tool_use", "id": "toolu_1", "name": crate::formats::anthropic::JSON_TOOL, "input": {"a": 1}}]});
        let out = answer_as(WireFormat::Anthropic, WireFormat::OpenAiChat, answer);
        assert_eq!(out["choices"][0]["message"]["content"], r#"{"a":1}"#, "{out}");
        assert_eq!(out["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn key_order_survives_translation() {
        use serde_json::json;
        // Structured output is generated in the schema's order: `reasoning` before `answer`.
        let schema = json!({"type": "object", "properties": {"reasoning": {"type": "string"}, "answer": {"type": "string"}},
            "required": ["reasoning", "answer"]});
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}]});
        for to in [WireFormat::Anthropic, WireFormat::OpenAiResponses, WireFormat::Gemini] {
            let sent = String::from_utf8(translated(WireFormat::OpenAiChat, to, &body).unwrap().to_vec()).unwrap();
            let (r, a) = (sent.find("\"reasoning\"").unwrap(), sent.find("\"answer\"").unwrap());
            assert!(r < a, "{to:?}: {sent}");
        }
        // A tool's input comes back as the model wrote it.
        let answer = json!({"type": "message", "role": "assistant", "stop_reason": "tool_use",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"zeta": 1, "alpha": 2}}]});
        let out = answer_as(WireFormat::Anthropic, WireFormat::OpenAiChat, answer);
        assert_eq!(
            out["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            r#"{"zeta":1,"alpha":2}"#
        );
    }

    #[test]
    fn a_whole_refusal_stays_a_refusal_between_openai_formats() {
        use serde_json::json;
        let responses = json!({"id": "resp_1", "object": "response", "status": "completed", "output": [
            {"type": "message", "id": "msg_1", "role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]}]});
        let out = answer_as(WireFormat::OpenAiResponses, WireFormat::OpenAiChat, responses.clone());
        let message = &out["choices"][0]["message"];
        assert_eq!(
            (message["refusal"].as_str(), message["content"].is_null()),
            (Some("No."), true),
            "{out}"
        );
        let chat = json!({"choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": null, "refusal": "No."}}]});
        let out = answer_as(WireFormat::OpenAiChat, WireFormat::OpenAiResponses, chat.clone());
        assert_eq!(
            out["output"][0]["content"][0],
            json!({"type": "refusal", "refusal": "No."}),
            "{out}"
        );
        let out = answer_as(WireFormat::OpenAiChat, WireFormat::Anthropic, chat);
        assert_eq!(out["content"][0], json!({"type": "text", "text": "No."}), "{out}");
        let out = answer_as(WireFormat::OpenAiResponses, WireFormat::Gemini, responses);
        assert_eq!(out["candidates"][0]["content"]["parts"][0]["text"], "No.", "{out}");
    }

    #[test]
    fn an_image_the_model_made_reaches_every_client_and_comes_back() {
        use serde_json::json;
        use WireFormat::*;
        let picture = json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}});
        let gemini = json!({"candidates": [{"index": 0, "finishReason": "STOP",
            "content": {"role": "model", "parts": [{"text": "Here:"}, picture]}}]});
        let chat = answer_as(Gemini, OpenAiChat, gemini.clone());
        let message = &chat["choices"][0]["message"];
        assert_eq!(message["content"], "Here:", "{chat}");
        assert_eq!(
            message["images"],
            json!([{"index": 0, "type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]),
            "{chat}"
        );
        let responses = answer_as(Gemini, OpenAiResponses, gemini.clone());
        let item = &responses["output"][1];
        assert_eq!(
            (&item["type"], &item["result"], &item["output_format"]),
            (&json!("image_generation_call"), &json!("iVBORw0KGgo="), &json!("png")),
            "{responses}"
        );
        let anthropic = answer_as(Gemini, Anthropic, gemini.clone());
        assert_eq!(
            anthropic["content"][1],
            json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}),
            "{anthropic}"
        );
        // Each client's shape, read as an upstream's, is the same picture again.
        for (from, answer) in [(OpenAiChat, chat), (OpenAiResponses, responses), (Anthropic, anthropic)] {
            let back = answer_as(from, Gemini, answer);
            assert_eq!(
                back["candidates"][0]["content"]["parts"][1], picture,
                "{from:?}: {back}"
            );
        }
    }

    #[test]
    fn an_image_given_back_reaches_a_gemini_model_and_no_other_vendor() {
        use serde_json::json;
        use WireFormat::*;
        let picture = json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}});
        let url = "data:image/png;base64,iVBORw0KGgo=";
        let chat = json!({"model": "m", "messages": [
            {"role": "user", "content": "a cat"},
            {"role": "assistant", "content": "Here:", "images": [{"type": "image_url", "image_url": {"url": url}}]},
            {"role": "user", "content": "make it blue"}]});
        let responses = json!({"model": "m", "input": [
            {"role": "user", "content": "a cat"},
            {"type": "image_generation_call", "id": "ig_1", "status": "completed", "result": "iVBORw0KGgo=",
                "output_format": "png"},
            {"role": "user", "content": "make it blue"}]});
        let anthropic = json!({"model": "m", "max_tokens": 100, "messages": [
            {"role": "user", "content": "a cat"},
            {"role": "assistant", "content": [{"type": "text", "text": "Here:"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]},
            {"role": "user", "content": "make it blue"}]});
        for (from, body) in [
            (OpenAiChat, &chat),
            (OpenAiResponses, &responses),
            (Anthropic, &anthropic),
        ] {
            // A Gemini image model edits it: the model turn carries it.
            let out = upstream_body(from, Gemini, body.clone());
            let model_turn = &out["contents"][1];
            assert_eq!(model_turn["role"], "model", "{from:?}: {out}");
            assert!(
                model_turn["parts"].as_array().unwrap().contains(&picture),
                "{from:?}: {out}"
            );
        }
        // OpenAI and Anthropic take no image in an assistant turn: the turn goes without it.
        for (from, to, body) in [
            (OpenAiChat, Anthropic, &chat),
            (OpenAiResponses, Anthropic, &responses),
            (Anthropic, OpenAiChat, &anthropic),
            (Anthropic, OpenAiResponses, &anthropic),
            (OpenAiChat, OpenAiResponses, &chat),
        ] {
            let out = upstream_body(from, to, body.clone()).to_string();
            assert!(!out.contains("iVBORw0KGgo="), "{from:?} → {to:?}: {out}");
        }
    }

    /// Another vendor's client's sampling settings, which OpenAI's reasoning models refuse, are left
    /// out for those models only; an OpenAI client's own are never touched.
    #[test]
    fn sampling_settings_are_left_out_for_openai_reasoning_models() {
        use serde_json::json;
        let gemini_cli = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "generationConfig": {"temperature": 0, "topP": 0.95, "topK": 64, "presencePenalty": 0.5}});
        let to = |model: &str| translated_json(model, WireFormat::Gemini, WireFormat::OpenAiChat, &gemini_cli);
        for model in ["o4-mini", "gpt-5", "openai/gpt-5-mini", "codex-mini-latest"] {
            let v = to(model);
            for field in ["temperature", "top_p", "presence_penalty", "frequency_penalty"] {
                assert!(v.get(field).is_none(), "{model}: {field} in {v}");
            }
        }
        for model in ["gpt-4.1", "gpt-5-chat-latest"] {
            let v = to(model);
            assert_eq!(
                (&v["temperature"], &v["top_p"]),
                (&json!(0.0), &json!(0.95)),
                "{model}: {v}"
            );
        }
    }

    /// Stop sequences an OpenAI reasoning model refuses, or more than OpenAI takes, are refused
    /// (another upstream may take them); dropped, the answer would run past them.
    #[test]
    fn stop_sequences_openai_cannot_take_are_refused() {
        use serde_json::json;
        let agent = |stops: &[&str]| {
            json!({"model": "m", "max_tokens": 10, "stop_sequences": stops,
                "messages": [{"role": "user", "content": "hi"}]})
        };
        let to = |model: &str, body: &serde_json::Value| {
            translated_for(model, WireFormat::Anthropic, WireFormat::OpenAiChat, body)
        };
        assert!(matches!(
            to("o4-mini", &agent(&["\nObservation:"])),
            Err(ConvertError::Unsupported(_))
        ));
        assert!(matches!(
            to("gpt-4.1", &agent(&["a", "b", "c", "d", "e"])),
            Err(ConvertError::Unsupported(_))
        ));
        // Other OpenAI-style servers take more.
        let v = translated_json(
            "deepseek-chat",
            WireFormat::Anthropic,
            WireFormat::OpenAiChat,
            &agent(&["a", "b", "c", "d", "e"]),
        );
        assert_eq!(v["stop"].as_array().map(Vec::len), Some(5));
        let v = translated_json(
            "gpt-4.1",
            WireFormat::Anthropic,
            WireFormat::OpenAiChat,
            &agent(&["a", "b"]),
        );
        assert_eq!(v["stop"], json!(["a", "b"]));
        assert!(to("o4-mini", &agent(&[])).is_ok());
    }

    /// Gemini 2.5 and later refuse penalties: only older models get them, and never a zero one.
    #[test]
    fn penalties_reach_only_gemini_models_that_take_them() {
        use serde_json::json;
        let chat = |penalty: f64| {
            json!({"model": "m", "presence_penalty": penalty, "frequency_penalty": penalty,
                "messages": [{"role": "user", "content": "hi"}]})
        };
        let to = |model: &str, penalty: f64| {
            translated_json(model, WireFormat::OpenAiChat, WireFormat::Gemini, &chat(penalty))["generationConfig"]
                .clone()
        };
        for model in ["gemini-2.5-flash", "gemini-3-pro-preview", "gemini-flash-latest"] {
            let g = to(model, 0.5);
            assert!(
                g.get("presencePenalty").is_none() && g.get("frequencyPenalty").is_none(),
                "{model}: {g}"
            );
        }
        assert_eq!(to("gemini-2.0-flash", 0.5)["presencePenalty"], json!(0.5));
        assert!(to("gemini-2.0-flash", 0.0).get("presencePenalty").is_none());
    }

    /// A tool result's text parts reach a format that takes one text as separate lines.
    #[test]
    fn a_tool_result_s_parts_stay_apart() {
        use serde_json::json;
        let body = json!({"model": "m", "max_tokens": 100, "messages": [
            {"role": "user", "content": "look"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "browse", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [
                {"type": "text", "text": "{\"a\":1}"}, {"type": "text", "text": "{\"b\":2}"}]}]}]});
        let v = translated_json("m", WireFormat::Anthropic, WireFormat::OpenAiChat, &body);
        let tool = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["role"] == "tool")
            .cloned()
            .unwrap();
        assert_eq!(tool["content"], "{\"a\":1}\n{\"b\":2}", "{v}");
    }

    /// Log probabilities are refused for a translation (no encoder carries them back), not dropped.
    #[test]
    fn log_probabilities_are_refused_across_formats() {
        use serde_json::json;
        let asks =
            json!({"model": "m", "logprobs": true, "top_logprobs": 5, "messages": [{"role": "user", "content": "hi"}]});
        for to in [WireFormat::Gemini, WireFormat::Anthropic, WireFormat::OpenAiResponses] {
            let e = translated_for("m", WireFormat::OpenAiChat, to, &asks).unwrap_err();
            assert!(
                matches!(e, ConvertError::Unsupported(ref m) if m.contains("log probabilities")),
                "{to:?}: {e:?}"
            );
        }
        let off = json!({"model": "m", "logprobs": false, "messages": [{"role": "user", "content": "hi"}]});
        assert!(translated_for("m", WireFormat::OpenAiChat, WireFormat::Gemini, &off).is_ok());
    }

    /// Gemini 2.0 and Gemma cannot think: a client's thinking is asked only of models that can.
    #[test]
    fn thinking_is_asked_only_of_gemini_models_that_think() {
        use serde_json::json;
        let claude_code = json!({"model": "m", "max_tokens": 4096, "thinking": {"type": "enabled", "budget_tokens": 8000},
            "messages": [{"role": "user", "content": "hi"}]});
        let to = |model: &str| translated_json(model, WireFormat::Anthropic, WireFormat::Gemini, &claude_code);
        for model in ["gemini-2.0-flash", "gemini-2.0-flash-lite", "gemma-3-27b-it"] {
            assert!(to(model)["generationConfig"].get("thinkingConfig").is_none(), "{model}");
        }
        for model in ["gemini-2.5-flash", "gemini-3-pro-preview", "models/gemini-2.5-pro"] {
            assert!(to(model)["generationConfig"]["thinkingConfig"].is_object(), "{model}");
        }
    }

    /// Gemini 2.x refuses JSON mode beside function declarations: asked for in words there; Gemini 3
    /// takes both, and without tools JSON mode is JSON mode.
    #[test]
    fn gemini_before_3_gets_json_mode_beside_tools_in_words() {
        use serde_json::json;
        let body = |tools: bool| {
            let mut b = json!({"model": "m", "messages": [{"role": "user", "content": "plan"}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "plan",
                    "schema": {"type": "object", "properties": {"steps": {"type": "array"}}}}}});
            if tools {
                b["tools"] =
                    json!([{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}]);
            }
            b
        };
        let gemini =
            |model: &str, tools: bool| translated_json(model, WireFormat::OpenAiChat, WireFormat::Gemini, &body(tools));
        let v = gemini("gemini-2.5-flash", true);
        assert!(v["generationConfig"].get("responseMimeType").is_none(), "{v}");
        let said = v["systemInstruction"]["parts"][0]["text"].as_str().unwrap();
        assert!(said.contains("JSON Schema") && said.contains("steps"), "{said}");
        for (model, tools) in [("gemini-3-pro-preview", true), ("gemini-2.5-flash", false)] {
            let v = gemini(model, tools);
            assert_eq!(
                v["generationConfig"]["responseMimeType"], "application/json",
                "{model}: {v}"
            );
            assert!(v.get("systemInstruction").is_none(), "{model}: {v}");
        }
    }

    #[test]
    fn json_mode_is_known_from_the_request_not_from_its_words() {
        use serde_json::json;
        let opts = RequestOptions {
            model: "claude-x".into(),
            stream: true,
            default_max_tokens: 4096,
            fetched_media: None,
            stream_usage: true,
            replay_reasoning: false,
        };
        let mode = |body: serde_json::Value, to: WireFormat| {
            convert_request_named(WireFormat::OpenAiChat, to, body.to_string().as_bytes(), &opts)
                .expect("translated")
                .json_mode
        };
        let json_object = json!({"model": "m", "response_format": {"type": "json_object"},
            "messages": [{"role": "user", "content": "json please"}]});
        assert!(mode(json_object.clone(), WireFormat::Anthropic));
        assert!(!mode(json_object, WireFormat::Gemini));
        // A conversation that names the tool (about this gateway, say) is no JSON-mode request.
        let words = json!({"model": "m", "messages": [{"role": "user", "content": "what is json_tool_call?"}]});
        assert!(!mode(words, WireFormat::Anthropic));
    }

    #[test]
    fn gemini_s_draft_images_are_not_the_answer() {
        use serde_json::json;
        // Gemini 3 Pro Image: drafts marked as thought, then the image it answers with.
        let gemini = json!({"candidates": [{"index": 0, "finishReason": "STOP", "content": {"role": "model", "parts": [
            {"inlineData": {"mimeType": "image/png", "data": "ZHJhZnQ="}, "thought": true},
            {"inlineData": {"mimeType": "image/png", "data": "ZmluYWw="}}]}}]});
        let out = answer_as(WireFormat::Gemini, WireFormat::OpenAiChat, gemini);
        let images = &out["choices"][0]["message"]["images"];
        assert_eq!(images.as_array().map(Vec::len), Some(1), "{out}");
        assert_eq!(images[0]["image_url"]["url"], "data:image/png;base64,ZmluYWw=");
        // An image item without its format is told by its bytes.
        let jpeg = json!({"id": "resp_1", "object": "response", "status": "completed", "output": [
            {"type": "image_generation_call", "id": "ig_1", "status": "completed", "result": "/9j/4AAQ"}]});
        let out = answer_as(WireFormat::OpenAiResponses, WireFormat::Gemini, jpeg);
        assert_eq!(
            out["candidates"][0]["content"]["parts"][0]["inlineData"]["mimeType"], "image/jpeg",
            "{out}"
        );
    }
}
