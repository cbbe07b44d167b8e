//! Error bodies in the client's own format.

use bytes::Bytes;
use serde_json::{json, Value};

use super::ClientApi;

/// `{"error": {"message", "type", "param", "code", ...details}}`, the OpenAI error shape.
pub fn openai_error(message: &str, err_type: &str, code: Option<&str>, details: Option<Value>) -> Bytes {
    let mut error = json!({"message": message, "type": err_type, "param": null, "code": code});
    if let (Some(Value::Object(extra)), Some(obj)) = (details, error.as_object_mut()) {
        obj.extend(extra);
    }
    Bytes::from(json!({ "error": error }).to_string())
}

/// An SSE event that tells a streaming client its stream failed, in the client's own format.
/// `at_boundary` says whether the bytes sent so far end on an event boundary.
pub fn stream_error_event(api: ClientApi, message: &str, code: &str, at_boundary: bool) -> Bytes {
    let sep = if at_boundary { "" } else { "\n\n" };
    let event = match api {
        ClientApi::ChatCompletions => format!(
            "{sep}data: {}\n\n",
            json!({"error": {"message": message, "type": "upstream_error", "param": null, "code": code}})
        ),
        ClientApi::Responses => format!(
            "{sep}event: error\ndata: {}\n\n",
            json!({"type": "error", "code": code, "message": message, "param": null})
        ),
    };
    Bytes::from(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let b = openai_error(
            "nope",
            "invalid_request_error",
            Some("model_not_found"),
            Some(json!({"attempts": []})),
        );
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["attempts"], json!([]));
        let e = stream_error_event(ClientApi::ChatCompletions, "cut", "stream_interrupted", false);
        assert!(e.starts_with(b"\n\ndata: {\"error\""));
        let e = stream_error_event(ClientApi::Responses, "cut", "stream_interrupted", true);
        assert!(e.starts_with(b"event: error\ndata: "));
    }
}
