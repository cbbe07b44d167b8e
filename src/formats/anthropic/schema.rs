//! A client's JSON Schema made into one Anthropic's structured output (`output_config.format`)
//! takes. Claude compiles the schema into a grammar, which is narrower than JSON Schema: every
//! object must say `additionalProperties: false`, and numeric, length and count bounds are refused
//! with a 400 ("For 'integer' type, property 'minimum' is not supported"). OpenAI clients send
//! such schemas freely (outside strict mode), and Gemini clients' schemas never say
//! `additionalProperties`. As Anthropic's own SDKs do, a bound moves into the `description`, where
//! the model still reads it.

use serde_json::{Map, Value};

/// Keywords Claude's structured output refuses.
const BOUNDS: &[&str] = &[
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
];

/// Keywords whose value is a schema.
const SUBSCHEMA: &[&str] = &["items", "additionalItems", "contains", "not", "if", "then", "else"];
/// Keywords whose value is a list of schemas.
const SUBSCHEMA_LISTS: &[&str] = &["anyOf", "oneOf", "allOf", "prefixItems"];
/// Keywords whose value maps names to schemas.
const SUBSCHEMA_MAPS: &[&str] = &["properties", "patternProperties", "$defs", "definitions"];

/// Deeper than this, a schema is left as it is (Anthropic refuses what is that deep anyway).
const MAX_DEPTH: usize = 64;

/// `schema` as Claude's structured output takes it.
pub fn for_structured_output(schema: &Value) -> Value {
    let mut out = schema.clone();
    adapt(&mut out, 0);
    out
}

/// Whether the schema has an object open to properties it does not name: a dictionary such as
/// Pydantic's `dict[str, float]` (`additionalProperties` a schema, or `true`), `patternProperties`,
/// or a free-form `{"type": "object"}`. Closed, as structured output needs it, such an object
/// could only be `{}`: the answer would lose its data.
pub fn has_open_objects(schema: &Value) -> bool {
    fn open(o: &Map<String, Value>) -> bool {
        match o.get("additionalProperties") {
            Some(Value::Bool(false)) => false,
            Some(_) => true,
            None => is_object_schema(o) && !o.contains_key("properties"),
        }
    }
    fn walk(v: &Value, depth: usize) -> bool {
        if depth > MAX_DEPTH {
            return false;
        }
        match v {
            Value::Object(o) => {
                open(o) || o.contains_key("patternProperties") || o.values().any(|v| walk(v, depth + 1))
            }
            Value::Array(list) => list.iter().any(|v| walk(v, depth + 1)),
            _ => false,
        }
    }
    walk(schema, 0)
}

fn adapt(schema: &mut Value, depth: usize) {
    let Value::Object(o) = schema else { return };
    if depth > MAX_DEPTH {
        return;
    }
    move_bounds_to_description(o);
    if is_object_schema(o) {
        o.insert("additionalProperties".into(), Value::Bool(false));
    }
    for (key, value) in o.iter_mut() {
        let key = key.as_str();
        if SUBSCHEMA.contains(&key) {
            adapt(value, depth + 1);
        } else if SUBSCHEMA_LISTS.contains(&key) {
            if let Value::Array(list) = value {
                list.iter_mut().for_each(|s| adapt(s, depth + 1));
            }
        } else if SUBSCHEMA_MAPS.contains(&key) {
            if let Value::Object(map) = value {
                map.values_mut().for_each(|s| adapt(s, depth + 1));
            }
        }
    }
}

fn is_object_schema(o: &Map<String, Value>) -> bool {
    match o.get("type") {
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "object"),
        _ => o.contains_key("properties"),
    }
}

/// String formats Claude's structured output takes; any other moves into the description.
const FORMATS: &[&str] = &[
    "date-time",
    "time",
    "date",
    "duration",
    "email",
    "hostname",
    "uri",
    "ipv4",
    "ipv6",
    "uuid",
];

fn move_bounds_to_description(o: &mut Map<String, Value>) {
    let mut moved: Vec<String> = BOUNDS
        .iter()
        .filter_map(|k| o.remove(*k).map(|v| format!("{k}: {v}")))
        .collect();
    // `minItems` of 0 or 1 only.
    if o.get("minItems").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        if let Some(v) = o.remove("minItems") {
            moved.push(format!("minItems: {v}"));
        }
    }
    let string = o.get("type").and_then(Value::as_str) == Some("string");
    if o.get("format")
        .is_some_and(|f| !string || f.as_str().is_none_or(|f| !FORMATS.contains(&f)))
    {
        if let Some(v) = o.remove("format") {
            moved.push(format!("format: {v}"));
        }
    }
    // `oneOf` is not in Claude's grammar; `anyOf` is, and exactly-one is what the model reads
    // of it anyway.
    if !o.contains_key("anyOf") {
        if let Some(v) = o.remove("oneOf") {
            o.insert("anyOf".into(), v);
        }
    }
    if moved.is_empty() {
        return;
    }
    let note = moved.join(", ");
    let description = match o.get("description").and_then(Value::as_str) {
        Some(d) if !d.is_empty() => format!("{d} ({note})"),
        _ => format!("({note})"),
    };
    o.insert("description".into(), Value::String(description));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_are_closed_and_bounds_become_descriptions_at_every_depth() {
        let schema = json!({
            "type": "object",
            "properties": {
                "n": {"type": "integer", "minimum": 1, "maximum": 9, "description": "How many"},
                "tags": {"type": "array", "maxItems": 3, "items": {"type": "string", "maxLength": 20}},
                "minimum": {"type": "object", "properties": {"x": {"type": "number"}}},
                "either": {"anyOf": [{"type": "object", "properties": {}}, {"type": "null"}]}
            },
            "$defs": {"point": {"type": "object", "additionalProperties": true}},
            "required": ["n"]
        });
        let out = for_structured_output(&schema);
        assert_eq!(out["additionalProperties"], false);
        assert_eq!(
            out["properties"]["n"],
            json!({"type": "integer", "description": "How many (minimum: 1, maximum: 9)"})
        );
        assert_eq!(out["properties"]["tags"]["description"], "(maxItems: 3)");
        assert_eq!(out["properties"]["tags"]["items"]["description"], "(maxLength: 20)");
        // A property that happens to be called `minimum` is a property, not a bound.
        assert_eq!(out["properties"]["minimum"]["additionalProperties"], false);
        assert_eq!(out["properties"]["either"]["anyOf"][0]["additionalProperties"], false);
        // As Anthropic's SDK: minItems above 1, formats Claude lacks, and oneOf.
        let sdk_schema = json!({"type": "object", "properties": {
            "two": {"type": "array", "minItems": 2, "items": {"type": "string", "format": "email"}},
            "one": {"type": "array", "minItems": 1},
            "n": {"type": "integer", "format": "int32"},
            "s": {"type": "string", "format": "phone"},
            "pick": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}});
        let sdk_like = for_structured_output(&sdk_schema);
        let p = &sdk_like["properties"];
        assert_eq!(p["two"]["description"], "(minItems: 2)");
        assert_eq!(p["two"]["items"]["format"], "email", "a format Claude takes stays");
        assert_eq!(p["one"]["minItems"], 1);
        assert_eq!(p["n"], json!({"type": "integer", "description": "(format: \"int32\")"}));
        assert_eq!(p["s"]["description"], "(format: \"phone\")");
        assert!(p["pick"].get("oneOf").is_none() && p["pick"]["anyOf"].is_array(), "{p}");
        assert!(out["properties"]["either"]["anyOf"][1]
            .get("additionalProperties")
            .is_none());
        assert_eq!(out["$defs"]["point"]["additionalProperties"], false);
        assert_eq!(out["required"], json!(["n"]));
    }
}
