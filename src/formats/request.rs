//! Reading what routing needs from a request body (`model`, `stream`) and rewriting `model` in place,
//! without re-serialising anything else: unknown fields, key order and number formatting survive.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::detect::{classify, Top};
use super::wire::WireFormat;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("We could not parse the JSON body of your request: {0}")]
    InvalidJson(String),
    #[error("The request body must be a JSON object")]
    NotAnObject,
    #[error("You must provide a model parameter")]
    MissingModel,
    #[error("`model` must be a non-empty string of at most 256 bytes")]
    BadModel,
}

/// The longest model name taken, in bytes: far past any real one (the longest Azure deployment or
/// Bedrock ARN), and short enough that names a client makes up cost little where they are kept
/// (a `provider/model` name has health of its own; a session's binding is kept per model).
pub const MAX_MODEL_BYTES: usize = 256;

/// What the gateway reads from a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    pub model: String,
    /// Byte range of the `model` value (quotes included) in the body.
    model_span: (usize, usize),
    /// `"stream": true` or `false` in the body; `None` when the body does not say (absent, `null`).
    pub stream: Option<bool>,
    /// Byte range of the `stream` value, when present.
    stream_span: Option<(usize, usize)>,
    /// Offset just after the opening `{`.
    object_start: usize,
    /// Byte range of the `stream_options` value, when present.
    stream_options_span: Option<(usize, usize)>,
    /// `stream_options.include_usage: true`: the client wants the OpenAI usage chunk.
    pub include_usage: bool,
    /// `n` above 1: an answer of several choices.
    pub several_choices: bool,
    /// A Responses request's `previous_response_id`: the response it continues lives with the
    /// upstream that made it.
    pub previous_response_id: Option<String>,
    /// A Responses request's `store: false`: nothing can continue from its answer.
    pub unstored: bool,
}

#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    stream_options: Option<&'a RawValue>,
    #[serde(borrow, default)]
    n: Option<&'a RawValue>,
    #[serde(borrow, default)]
    previous_response_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    store: Option<&'a RawValue>,
}

/// A member that is there, `null` included (serde reads a `null` `Option` as absent): a rewrite
/// must replace it, not add the same key a second time.
pub(super) fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct StreamOptionsPeek {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// The edits a gateway makes to a same-format body: nothing else is touched.
#[derive(Debug, Clone, Copy)]
pub struct Rewrite<'a> {
    /// The physical model name.
    pub model: &'a str,
    /// Set `"stream": true` (a client that asked for SSE with `Accept: text/event-stream` only).
    pub force_stream: bool,
    /// Ask an OpenAI stream for its usage chunk (`stream_options.include_usage: true`, the client's
    /// other stream options kept) when the client did not: the gateway counts every stream's tokens,
    /// and the extra chunk is stripped for the client.
    pub ask_usage: bool,
}

/// Validates the body as JSON and finds `model` and `stream` at its top level.
pub fn inspect(body: &[u8]) -> Result<Inspected, BodyError> {
    let peek: Peek = parse_object(body)?;
    let mut inspected = inspected(body, peek.model, peek.stream, peek.stream_options, peek.n)?;
    inspected.previous_response_id = peek
        .previous_response_id
        .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
        .filter(|id| !id.is_empty() && id.len() <= 256);
    inspected.unstored = peek.store.is_some_and(|raw| raw.get() == "false");
    Ok(inspected)
}

/// [inspect] and [detect_chat_body](super::detect_chat_body) in one pass over the body: what
/// `/v1/chat/completions` needs, whose bodies may also be Claude- or Gemini-shaped.
pub fn inspect_chat(body: &[u8]) -> Result<(Inspected, WireFormat), BodyError> {
    match parse_object::<Top>(body) {
        Ok(top) => Ok((
            inspected(body, top.model, top.stream, top.stream_options, top.n)?,
            classify(&top),
        )),
        // Valid JSON the shape detector cannot read (e.g. `messages` is not a list) is OpenAI Chat,
        // whose own parser reports the problem; the routing fields are read on their own.
        Err(BodyError::InvalidJson(_)) if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() => {
            Ok((inspect(body)?, WireFormat::OpenAiChat))
        }
        Err(e) => Err(e),
    }
}

/// Parses the top level of a body that must be a JSON object.
fn parse_object<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, BodyError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        // Still report invalid JSON as such.
        serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(|e| BodyError::InvalidJson(e.to_string()))?;
        return Err(BodyError::NotAnObject);
    }
    serde_json::from_slice(body).map_err(|e| BodyError::InvalidJson(e.to_string()))
}

fn inspected(
    body: &[u8],
    model: Option<&RawValue>,
    stream: Option<&RawValue>,
    stream_options: Option<&RawValue>,
    n: Option<&RawValue>,
) -> Result<Inspected, BodyError> {
    let raw = model.ok_or(BodyError::MissingModel)?;
    let model: String = serde_json::from_str(raw.get()).map_err(|_| BodyError::BadModel)?;
    if model.is_empty() || model.len() > MAX_MODEL_BYTES {
        return Err(BodyError::BadModel);
    }
    let span = |raw: &RawValue| {
        let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
        (start, start + raw.get().len())
    };
    let object_start = body.iter().position(|b| *b == b'{').map_or(0, |p| p + 1);
    let include_usage = stream_options
        .and_then(|raw| serde_json::from_str::<StreamOptionsPeek>(raw.get()).ok())
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    Ok(Inspected {
        model,
        model_span: span(raw),
        stream: stream.and_then(|s| match s.get() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }),
        stream_span: stream.map(span),
        object_start,
        stream_options_span: stream_options.map(span),
        include_usage,
        several_choices: n.and_then(|n| n.get().parse::<u64>().ok()).is_some_and(|n| n > 1),
        previous_response_id: None,
        unstored: false,
    })
}

/// Whether `rewrite` with `ask_usage` asks for a usage chunk the client did not ask for.
pub fn injects_usage(inspected: &Inspected, edit: &Rewrite) -> bool {
    edit.ask_usage && !inspected.include_usage
}

/// The client's `stream_options` with `include_usage: true`; anything but an object is replaced.
fn with_usage(raw: &[u8]) -> String {
    let mut options: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(raw).unwrap_or_default();
    options.insert("include_usage".into(), serde_json::Value::Bool(true));
    serde_json::Value::Object(options).to_string()
}

/// The body with the edits of `edit` spliced in. Everything else stays byte for byte; the original
/// bytes come back when nothing changes.
pub fn rewrite(body: &Bytes, inspected: &Inspected, edit: &Rewrite) -> Bytes {
    let mut edits: Vec<(usize, usize, String)> = Vec::with_capacity(3);
    if inspected.model != edit.model {
        let quoted = serde_json::to_string(edit.model).unwrap_or_else(|_| format!("\"{}\"", edit.model));
        edits.push((inspected.model_span.0, inspected.model_span.1, quoted));
    }
    if edit.force_stream && inspected.stream != Some(true) {
        match inspected.stream_span {
            Some((s, e)) => edits.push((s, e, "true".into())),
            None => {
                let at = inspected.object_start;
                edits.push((at, at, "\"stream\":true,".into()));
            }
        }
    }
    if injects_usage(inspected, edit) {
        match inspected.stream_options_span {
            Some((s, e)) => edits.push((s, e, with_usage(&body[s..e]))),
            None => {
                let at = inspected.object_start;
                edits.push((at, at, "\"stream_options\":{\"include_usage\":true},".into()));
            }
        }
    }
    if edits.is_empty() {
        return body.clone();
    }
    edits.sort_by_key(|e| e.0);
    let grow: usize = edits.iter().map(|e| e.2.len()).sum();
    let mut out = BytesMut::with_capacity(body.len() + grow);
    let mut at = 0;
    for (start, end, text) in &edits {
        out.extend_from_slice(&body[at..*start]);
        out.extend_from_slice(text.as_bytes());
        at = *end;
    }
    out.extend_from_slice(&body[at..]);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_responses_continuation_is_read_in_the_same_pass() {
        let i = inspect(br#"{"model":"m","previous_response_id":"resp_1","store":false,"input":"x"}"#).unwrap();
        assert_eq!(i.previous_response_id.as_deref(), Some("resp_1"));
        assert!(i.unstored);
        // Fields of another type are the upstream's to refuse, not a reason to refuse the body.
        let odd = inspect(br#"{"model":"m","previous_response_id":7,"store":"no","n":"2"}"#).unwrap();
        assert!(odd.previous_response_id.is_none() && !odd.unstored && !odd.several_choices);
        assert!(inspect(br#"{"model":"m","n":3}"#).unwrap().several_choices);
    }

    fn edit(model: &str, force_stream: bool) -> Rewrite<'_> {
        Rewrite {
            model,
            force_stream,
            ask_usage: false,
        }
    }

    #[test]
    fn asks_for_usage_unless_the_client_asked_itself() {
        let body = Bytes::from_static(br#"{"model":"m","stream":true}"#);
        let i = inspect(&body).unwrap();
        let e = Rewrite {
            model: "m",
            force_stream: false,
            ask_usage: true,
        };
        assert!(injects_usage(&i, &e));
        let out = rewrite(&body, &i, &e);
        assert_eq!(
            &out[..],
            br#"{"stream_options":{"include_usage":true},"model":"m","stream":true}"#
        );
        let i2 = inspect(&out).unwrap();
        assert!(i2.include_usage && !injects_usage(&i2, &e));
        assert_eq!(rewrite(&out, &i2, &e), out, "asked already: left as it is");
        // A client that said no (or nothing) in its own stream options: usage asked for all the
        // same (the gateway counts every stream's tokens), its other options kept.
        for (options, want) in [
            (r#"{"include_usage":false}"#, r#"{"include_usage":true}"#),
            (r#"{}"#, r#"{"include_usage":true}"#),
            (
                r#"{"include_obfuscation":false}"#,
                r#"{"include_obfuscation":false,"include_usage":true}"#,
            ),
            (r#"null"#, r#"{"include_usage":true}"#),
        ] {
            let body = Bytes::from(format!(r#"{{"model":"m","stream":true,"stream_options":{options}}}"#));
            let i = inspect(&body).unwrap();
            assert!(injects_usage(&i, &e) && !i.include_usage, "{options}");
            let out = rewrite(&body, &i, &e);
            assert_eq!(
                String::from_utf8_lossy(&out),
                format!(r#"{{"model":"m","stream":true,"stream_options":{want}}}"#)
            );
        }
    }

    #[test]
    fn finds_model_and_stream() {
        let body = br#" {"messages":[{"role":"user","content":"hi \"model\""}], "model" : "fast", "stream":true}"#;
        let i = inspect(body).unwrap();
        assert_eq!(i.model, "fast");
        assert_eq!(i.stream, Some(true));
        let out = rewrite(&Bytes::from_static(body), &i, &edit("gpt-4o-mini", false));
        assert_eq!(
            &out[..],
            &br#" {"messages":[{"role":"user","content":"hi \"model\""}], "model" : "gpt-4o-mini", "stream":true}"#[..]
        );
    }

    #[test]
    fn keeps_everything_else_byte_for_byte() {
        let body = Bytes::from_static(br#"{"z":1.50,"model":"a\u0041","x":{"model":"inner"}}"#);
        let i = inspect(&body).unwrap();
        assert_eq!(i.model, "aA");
        assert_eq!(i.stream, None);
        assert_eq!(
            &rewrite(&body, &i, &edit("p/\"q", false))[..],
            &br#"{"z":1.50,"model":"p/\"q","x":{"model":"inner"}}"#[..]
        );
        let same = rewrite(&body, &i, &edit("aA", false));
        assert_eq!(same.as_ptr(), body.as_ptr(), "unchanged name: no copy");
    }

    #[test]
    fn forces_stream_when_asked() {
        let body = Bytes::from_static(br#"{"model":"m","stream":false}"#);
        let i = inspect(&body).unwrap();
        assert_eq!(
            &rewrite(&body, &i, &edit("m", true))[..],
            br#"{"model":"m","stream":true}"#
        );
        let body = Bytes::from_static(br#" { "model":"m"}"#);
        let i = inspect(&body).unwrap();
        let out = rewrite(&body, &i, &edit("x", true));
        assert_eq!(&out[..], br#" {"stream":true, "model":"x"}"#);
        assert_eq!(inspect(&out).unwrap().stream, Some(true));
    }

    #[test]
    fn rejects_bad_bodies() {
        assert!(matches!(inspect(b"{\"model\":"), Err(BodyError::InvalidJson(_))));
        assert!(matches!(inspect(b"not json"), Err(BodyError::InvalidJson(_))));
        assert!(matches!(inspect(b""), Err(BodyError::InvalidJson(_))));
        assert_eq!(inspect(b"[1]"), Err(BodyError::NotAnObject));
        assert_eq!(inspect(b"{}"), Err(BodyError::MissingModel));
        assert_eq!(inspect(br#"{"model":3}"#), Err(BodyError::BadModel));
        assert_eq!(inspect(br#"{"model":""}"#), Err(BodyError::BadModel));
        let long = format!(r#"{{"model":"openai/{}"}}"#, "a".repeat(MAX_MODEL_BYTES));
        assert_eq!(inspect(long.as_bytes()), Err(BodyError::BadModel));
        assert!(matches!(
            inspect(br#"{"model":"a","model":"b"}"#),
            Err(BodyError::InvalidJson(_))
        ));
    }
}
