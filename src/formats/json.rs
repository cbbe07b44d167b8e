//! Small helpers for walking `serde_json` values without panicking on unexpected shapes.

use serde_json::{Map, Value};

use super::convert::ConvertError;

pub(crate) type Object = Map<String, Value>;

/// The body, which must be a JSON object, or `ConvertError::Invalid`.
pub(crate) fn parse_object(body: &[u8]) -> Result<Value, ConvertError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(ConvertError::Invalid("The request body must be a JSON object".into())),
        Err(e) => Err(ConvertError::Invalid(format!("We could not parse the JSON body: {e}"))),
    }
}

pub(crate) fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)?.as_str()
}

pub(crate) fn u64_at(v: &Value, key: &str) -> Option<u64> {
    let n = v.get(key)?;
    n.as_u64()
        .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

pub(crate) fn f64_at(v: &Value, key: &str) -> Option<f64> {
    v.get(key)?.as_f64()
}

pub(crate) fn bool_at(v: &Value, key: &str) -> Option<bool> {
    v.get(key)?.as_bool()
}

/// The array at `key`, or an empty slice when absent or not an array.
pub(crate) fn arr_at<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// Gemini accepts proto JSON in camelCase and snake_case: look up either spelling.
pub(crate) fn get2<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake)).filter(|x| !x.is_null())
}

/// A fresh id with a vendor-looking prefix, for formats that need one the upstream did not give.
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}{:024x}", rand::random::<u128>() & ((1u128 << 96) - 1))
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Tool-call arguments text parsed to an object; empty or invalid arguments become `{}` (formats.md §2.1).
pub(crate) fn args_object(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::Object(Map::new()),
    }
}

/// A tool call's arguments (Anthropic's `input`, Gemini's `args`) as the arguments text an OpenAI
/// client reads: an object serialised; a string, which some compatible servers send already
/// encoded, as it is (not encoded a second time); nothing or `null` as `{}`.
pub(crate) fn args_text(v: Option<&Value>) -> String {
    use crate::formats::openai_chat::request::{arguments_text, non_empty_args};
    non_empty_args(&arguments_text(v))
}

/// Inserts `key: value` only when the value is present.
pub(crate) fn put<T: Into<Value>>(obj: &mut Object, key: &str, value: Option<T>) {
    if let Some(v) = value {
        obj.insert(key.to_string(), v.into());
    }
}
