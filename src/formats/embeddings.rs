//! Embeddings, in OpenAI's shape (`POST /v1/embeddings`): sent as they are to OpenAI-compatible
//! upstreams, translated for Gemini's `batchEmbedContents`. Anthropic's API has none.

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::convert::ConvertError;
use super::Usage;

/// Most inputs Gemini embeds in one `batchEmbedContents` call.
const GEMINI_BATCH_LIMIT: usize = 100;

#[derive(Deserialize)]
struct EmbeddingsRequest {
    input: Value,
    #[serde(default)]
    dimensions: Option<u64>,
    #[serde(default)]
    encoding_format: Option<String>,
}

fn read_request(body: &[u8]) -> Result<EmbeddingsRequest, ConvertError> {
    serde_json::from_slice(body).map_err(|e| ConvertError::Invalid(format!("The embeddings request is invalid: {e}")))
}

/// The texts to embed: `input` as one string or a list of them. Token ids (OpenAI's other forms)
/// mean nothing to another vendor's tokenizer.
fn texts(input: &Value) -> Result<Vec<&str>, ConvertError> {
    let texts: Option<Vec<&str>> = match input {
        Value::String(s) => Some(vec![s.as_str()]),
        Value::Array(items) => items.iter().map(Value::as_str).collect(),
        _ => None,
    };
    match texts {
        Some(t) if t.is_empty() => Err(ConvertError::Invalid("`input` must not be empty".into())),
        Some(t) => Ok(t),
        None if matches!(input, Value::Array(_)) => Err(ConvertError::Unsupported(
            "token-id `input` cannot be sent to a Gemini upstream; send the text".into(),
        )),
        None => Err(ConvertError::Invalid(
            "`input` must be a string or a list of strings".into(),
        )),
    }
}

/// The Gemini `batchEmbedContents` body for an OpenAI embeddings request, for `model`. What OpenAI
/// would refuse is refused here too, rather than answered in some other way.
pub fn gemini_request(body: &[u8], model: &str) -> Result<Bytes, ConvertError> {
    let req = read_request(body)?;
    let texts = texts(&req.input)?;
    if let Some(f) = req
        .encoding_format
        .as_deref()
        .filter(|f| !["float", "base64"].contains(f))
    {
        return Err(ConvertError::Invalid(format!(
            "`encoding_format` must be `float` or `base64`, not `{f}`"
        )));
    }
    if req.dimensions == Some(0) {
        return Err(ConvertError::Invalid("`dimensions` must be at least 1".into()));
    }
    if texts.len() > GEMINI_BATCH_LIMIT {
        return Err(ConvertError::Unsupported(format!(
            "a Gemini upstream embeds at most {GEMINI_BATCH_LIMIT} inputs per request, this one has {}",
            texts.len()
        )));
    }
    let model = format!("models/{}", model.strip_prefix("models/").unwrap_or(model));
    let requests: Vec<Value> = texts
        .iter()
        .map(|text| {
            let mut one = json!({"model": model, "content": {"parts": [{"text": text}]}});
            if let Some(d) = req.dimensions {
                one["outputDimensionality"] = d.into();
            }
            one
        })
        .collect();
    Ok(Bytes::from(json!({ "requests": requests }).to_string()))
}

/// The OpenAI embeddings answer for Gemini's, in the encoding the client's `request` asked for
/// (`base64`: each vector's little-endian `f32`s, which OpenAI's SDKs ask for by default). A vector
/// cut to the `dimensions` asked for is scaled back to length 1: OpenAI's always are (clients rank
/// by dot product), Gemini normalises only its full-size output.
pub fn from_gemini(answer: &[u8], request: &[u8], model: &str) -> Result<(Bytes, Option<Usage>), ConvertError> {
    let asked = read_request(request)?;
    let base64 = asked.encoding_format.as_deref() == Some("base64");
    let normalise = asked.dimensions.is_some();
    let v: Value = serde_json::from_slice(answer)
        .map_err(|e| ConvertError::Invalid(format!("The upstream's embeddings are not JSON: {e}")))?;
    let embeddings = v
        .get("embeddings")
        .and_then(Value::as_array)
        .ok_or_else(|| ConvertError::Invalid("the upstream's answer holds no embeddings".into()))?;
    let mut data = Vec::with_capacity(embeddings.len());
    for (index, e) in embeddings.iter().enumerate() {
        let values = e
            .get("values")
            .and_then(Value::as_array)
            .ok_or_else(|| ConvertError::Invalid(format!("embedding {index} has no values")))?;
        let mut vector = values
            .iter()
            .map(Value::as_f64)
            .collect::<Option<Vec<f64>>>()
            .ok_or_else(|| ConvertError::Invalid(format!("embedding {index} holds a non-number")))?;
        let length = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
        if normalise && length > 0.0 {
            vector.iter_mut().for_each(|x| *x /= length);
        }
        let embedding = if base64 {
            let raw: Vec<u8> = vector.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect();
            Value::String(base64::engine::general_purpose::STANDARD.encode(raw))
        } else {
            json!(vector)
        };
        data.push(json!({"object": "embedding", "index": index, "embedding": embedding}));
    }
    let prompt_tokens = v
        .pointer("/usageMetadata/promptTokenCount")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let usage = Usage {
        input_tokens: prompt_tokens,
        ..Usage::default()
    };
    let out = json!({
        "object": "list",
        "data": data,
        "model": model,
        // Zeros when Gemini reports none: clients read the member.
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    });
    Ok((Bytes::from(out.to_string()), (prompt_tokens > 0).then_some(usage)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn texts_go_to_gemini_one_request_each() {
        let out = value(
            &gemini_request(
                br#"{"model":"e","input":["a b","c"],"dimensions":256}"#,
                "gemini-embedding-001",
            )
            .unwrap(),
        );
        let requests = out["requests"].as_array().unwrap();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0]["model"], "models/gemini-embedding-001");
        assert_eq!(requests[0]["content"]["parts"][0]["text"], "a b");
        assert_eq!(requests[1]["outputDimensionality"], 256);
        let one = value(&gemini_request(br#"{"model":"e","input":"just this"}"#, "models/m").unwrap());
        assert_eq!(one["requests"][0]["model"], "models/m");
        assert!(one["requests"][0].get("outputDimensionality").is_none());
    }

    #[test]
    fn what_gemini_cannot_take_is_refused_with_a_reason() {
        let tokens = gemini_request(br#"{"model":"e","input":[1,2,3]}"#, "m").unwrap_err();
        assert!(matches!(tokens, ConvertError::Unsupported(_)), "{tokens}");
        let many = format!(r#"{{"model":"e","input":{}}}"#, json!(vec!["x"; 101]));
        assert!(matches!(
            gemini_request(many.as_bytes(), "m"),
            Err(ConvertError::Unsupported(_))
        ));
        assert!(matches!(
            gemini_request(br#"{"model":"e","input":[]}"#, "m"),
            Err(ConvertError::Invalid(_))
        ));
        assert!(matches!(
            gemini_request(br#"{"model":"e"}"#, "m"),
            Err(ConvertError::Invalid(_))
        ));
        let bad = [
            &br#"{"model":"e","input":"a","encoding_format":"int8"}"#[..],
            br#"{"model":"e","input":"a","dimensions":0}"#,
        ];
        for body in bad {
            assert!(matches!(gemini_request(body, "m"), Err(ConvertError::Invalid(_))));
        }
    }

    #[test]
    fn gemini_vectors_come_back_as_floats_or_base64() {
        let answer = br#"{"embeddings":[{"values":[0.5,-1.0]},{"values":[0.25,2.0]}]}"#;
        let (out, usage) = from_gemini(answer, br#"{"model":"e","input":["a","b"]}"#, "e").unwrap();
        let out = value(&out);
        assert_eq!(out["object"], "list");
        assert_eq!(out["model"], "e");
        assert_eq!(out["data"][1]["index"], 1);
        assert_eq!(out["data"][1]["embedding"], json!([0.25, 2.0]));
        assert_eq!(out["usage"]["prompt_tokens"], 0);
        assert!(usage.is_none());
        let (out, _) = from_gemini(
            answer,
            br#"{"model":"e","input":["a","b"],"encoding_format":"base64"}"#,
            "e",
        )
        .unwrap();
        let b64 = value(&out)["data"][0]["embedding"].as_str().unwrap().to_string();
        let raw = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        let floats: Vec<f32> = raw
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(floats, vec![0.5, -1.0]);
        assert!(from_gemini(b"{}", br#"{"input":"a"}"#, "e").is_err());
    }

    #[test]
    fn vectors_cut_to_the_dimensions_asked_for_have_length_one() {
        let answer = br#"{"embeddings":[{"values":[3.0,4.0]}]}"#;
        let (out, _) = from_gemini(answer, br#"{"input":"a","dimensions":2}"#, "e").unwrap();
        assert_eq!(value(&out)["data"][0]["embedding"], json!([0.6, 0.8]));
        // Full-size vectors come as Gemini made them.
        let (out, _) = from_gemini(answer, br#"{"input":"a"}"#, "e").unwrap();
        assert_eq!(value(&out)["data"][0]["embedding"], json!([3.0, 4.0]));
    }
}
