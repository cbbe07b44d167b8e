//! The OpenAI error shape, with room for gateway details (such as the attempt summary).

use bytes::Bytes;
use serde_json::{json, Value};

/// `{"error": {"message", "type", "param", "code", ...details}}`, the OpenAI error shape.
pub fn openai_error(message: &str, err_type: &str, code: Option<&str>, details: Option<Value>) -> Bytes {
    let mut error = json!({"message": message, "type": err_type, "param": null, "code": code});
    if let (Some(Value::Object(extra)), Some(obj)) = (details, error.as_object_mut()) {
        obj.extend(extra);
    }
    Bytes::from(json!({ "error": error }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        let b = openai_error(
            "nope",
            "invalid_request_error",
            Some("model_not_found"),
            Some(json!({"attempts": []})),
        );
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["attempts"], json!([]));
    }
}
