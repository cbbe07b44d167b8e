//! Token counts: Anthropic's `/v1/messages/count_tokens` and Gemini's `:countTokens` measure a
//! prompt without answering it. Only these two APIs count; between them the request is the
//! conversation without the answer's settings, and the answer one number.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::convert::{convert_request, ConvertError, RequestOptions};
use super::json::parse_object;
use super::WireFormat;

/// What an Anthropic count request takes: the rest of a Messages request (`max_tokens`, `stream`,
/// sampling settings) is refused by it.
const ANTHROPIC_FIELDS: [&str; 7] = [
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "thinking",
    "mcp_servers",
];

/// A JSON object's members (`parse_object` has checked it is one).
fn object(body: &[u8]) -> Result<Map<String, Value>, ConvertError> {
    match parse_object(body)? {
        Value::Object(members) => Ok(members),
        _ => Err(ConvertError::Invalid("The request body must be a JSON object".into())),
    }
}

/// The upstream's count request (format `to`) for a client's count request (format `from`), for
/// the physical model `opts.model`. An Anthropic body for Anthropic is sent as the client wrote it
/// (with the model rewritten in place, as every same-format request); not through here.
pub fn request(from: WireFormat, to: WireFormat, body: &[u8], opts: &RequestOptions) -> Result<Bytes, ConvertError> {
    let gemini_model = format!("models/{}", opts.model.strip_prefix("models/").unwrap_or(&opts.model));
    let out = match (from, to) {
        (WireFormat::Gemini, WireFormat::Gemini) => {
            let mut obj = object(body)?;
            // The model a wrapped request names is the client's (a logical name, say).
            if let Some(Value::Object(inner)) = obj.get_mut("generateContentRequest") {
                inner.insert("model".into(), gemini_model.into());
            }
            obj
        }
        (WireFormat::Gemini, WireFormat::Anthropic) => {
            let inner = gemini_prompt(body)?;
            let converted = convert_request(from, to, &inner, opts)?;
            let mut obj = object(&converted)?;
            obj.retain(|k, _| ANTHROPIC_FIELDS.contains(&k.as_str()));
            obj
        }
        (WireFormat::Anthropic, WireFormat::Gemini) => {
            let converted = convert_request(from, to, body, opts)?;
            let mut inner = object(&converted)?;
            inner.insert("model".into(), gemini_model.into());
            let mut obj = Map::new();
            obj.insert("generateContentRequest".into(), Value::Object(inner));
            obj
        }
        _ => return Err(ConvertError::Unsupported(format!("{} cannot count tokens", to.label()))),
    };
    serde_json::to_vec(&out)
        .map(Bytes::from)
        .map_err(|e| ConvertError::Invalid(e.to_string()))
}

/// A Gemini count request's prompt as a `generateContent` body: the wrapped request (without its
/// model), or the bare `contents`.
fn gemini_prompt(body: &[u8]) -> Result<Vec<u8>, ConvertError> {
    let mut obj = object(body)?;
    let prompt = match obj.remove("generateContentRequest") {
        Some(Value::Object(mut inner)) => {
            inner.remove("model");
            inner
        }
        Some(_) => {
            return Err(ConvertError::Invalid(
                "`generateContentRequest` must be an object".into(),
            ))
        }
        None => obj,
    };
    serde_json::to_vec(&prompt).map_err(|e| ConvertError::Invalid(e.to_string()))
}

/// The client's count answer (format `to`) from the upstream's (format `from`).
pub fn answer(from: WireFormat, to: WireFormat, body: &[u8]) -> Result<Bytes, ConvertError> {
    let obj = object(body)?;
    let count = match from {
        WireFormat::Anthropic => obj.get("input_tokens").and_then(Value::as_u64),
        // Proto3 JSON leaves a zero out.
        WireFormat::Gemini => Some(obj.get("totalTokens").and_then(Value::as_u64).unwrap_or(0)),
        _ => None,
    }
    .ok_or_else(|| ConvertError::Invalid("the upstream's answer holds no token count".into()))?;
    let out = match to {
        WireFormat::Anthropic => json!({ "input_tokens": count }),
        WireFormat::Gemini => json!({ "totalTokens": count }),
        _ => return Err(ConvertError::Unsupported(format!("{} has no token count", to.label()))),
    };
    Ok(Bytes::from(out.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(model: &str) -> RequestOptions {
        RequestOptions {
            model: model.into(),
            stream: false,
            default_max_tokens: 4096,
            fetched_media: None,
            stream_usage: true,
            replay_reasoning: false,
        }
    }

    fn value(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn an_anthropic_count_goes_to_gemini_wrapped_with_its_model() {
        let body = br#"{"model":"claude-x","system":"Be brief.","messages":[{"role":"user","content":"hi"}],
            "tools":[{"name":"ls","description":"list","input_schema":{"type":"object","properties":{}}}]}"#;
        let out = value(&request(WireFormat::Anthropic, WireFormat::Gemini, body, &opts("gemini-2.5-pro")).unwrap());
        let inner = &out["generateContentRequest"];
        assert_eq!(inner["model"], "models/gemini-2.5-pro");
        assert_eq!(inner["contents"][0]["parts"][0]["text"], "hi");
        assert_eq!(inner["systemInstruction"]["parts"][0]["text"], "Be brief.");
        assert_eq!(inner["tools"][0]["functionDeclarations"][0]["name"], "ls");
        assert_eq!(out.as_object().unwrap().len(), 1, "{out}");
    }

    #[test]
    fn a_gemini_count_goes_to_anthropic_without_the_answer_s_settings() {
        for body in [
            &br#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#[..],
            br#"{"generateContentRequest":{"model":"models/logical","contents":[{"role":"user","parts":[{"text":"hi"}]}],
                "systemInstruction":{"parts":[{"text":"Be brief."}]},"generationConfig":{"maxOutputTokens":5}}}"#,
        ] {
            let out = value(&request(WireFormat::Gemini, WireFormat::Anthropic, body, &opts("claude-x")).unwrap());
            assert_eq!(out["model"], "claude-x");
            assert_eq!(out["messages"][0]["content"][0]["text"], "hi", "{out}");
            for field in out.as_object().unwrap().keys() {
                assert!(ANTHROPIC_FIELDS.contains(&field.as_str()), "{field} in {out}");
            }
        }
    }

    #[test]
    fn a_gemini_count_for_gemini_names_the_physical_model() {
        let body = br#"{"generateContentRequest":{"model":"models/logical","contents":[]}}"#;
        let out = value(&request(WireFormat::Gemini, WireFormat::Gemini, body, &opts("gemini-2.5-pro")).unwrap());
        assert_eq!(out["generateContentRequest"]["model"], "models/gemini-2.5-pro");
        let bare = br#"{"contents":[{"parts":[{"text":"hi"}]}]}"#;
        let out = value(&request(WireFormat::Gemini, WireFormat::Gemini, bare, &opts("g")).unwrap());
        assert_eq!(out, value(bare));
    }

    #[test]
    fn answers_carry_the_count_across() {
        let a = answer(
            WireFormat::Gemini,
            WireFormat::Anthropic,
            br#"{"totalTokens":31,"promptTokensDetails":[]}"#,
        );
        assert_eq!(value(&a.unwrap()), json!({"input_tokens": 31}));
        let g = answer(WireFormat::Anthropic, WireFormat::Gemini, br#"{"input_tokens":12}"#);
        assert_eq!(value(&g.unwrap()), json!({"totalTokens": 12}));
        // Gemini leaves a zero out; Anthropic never does.
        assert_eq!(
            value(&answer(WireFormat::Gemini, WireFormat::Anthropic, b"{}").unwrap()),
            json!({"input_tokens": 0})
        );
        assert!(answer(WireFormat::Anthropic, WireFormat::Gemini, b"{}").is_err());
        assert!(answer(WireFormat::Anthropic, WireFormat::Gemini, b"[1]").is_err());
    }

    #[test]
    fn only_anthropic_and_gemini_count() {
        assert!(request(WireFormat::Anthropic, WireFormat::OpenAiChat, b"{}", &opts("m")).is_err());
    }
}
