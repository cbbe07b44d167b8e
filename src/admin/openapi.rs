//! The OpenAPI 3 document of the admin API, generated from the route table (paths, methods, access,
//! parameters) plus the request body schema of each write.

use serde_json::{json, Map, Value};

use super::router::{Access, Op, RouteSpec};

fn s(t: &str) -> Value {
    json!({"type": t})
}

fn obj(required: &[&str], props: Value) -> Value {
    json!({"type": "object", "required": required, "properties": props, "additionalProperties": false})
}

fn nullable(t: &str) -> Value {
    json!({"type": [t, "null"]})
}

fn key_body(required: &[&str]) -> Value {
    obj(
        required,
        json!({
            "name": s("string"),
            "expires": {"type": "string", "enum": ["week", "month", "year", "never"]},
            "disabled": s("boolean"),
            "allowed_providers": {"type": ["array", "null"], "items": {"type": "string"}},
            "rate_limit_rps": {"type": ["integer", "null"], "minimum": 1},
        }),
    )
}

fn provider_body(required: &[&str]) -> Value {
    obj(
        required,
        json!({
            "id": s("string"),
            "base_url": s("string"),
            "api_style": {"type": "string", "enum": ["openai", "responses", "anthropic", "gemini"]},
            "provider_type": {"type": "string", "enum": ["native", "aggregator"]},
            "weight": {"type": "number", "exclusiveMinimum": 0},
            "api_keys": {"type": "array", "items": obj(&["key"], json!({"key": s("string"), "qps_limit": {"type": ["integer", "null"], "minimum": 1}}))},
            "models": {"type": "array", "items": obj(&["model"], json!({
                "model": s("string"), "alias": nullable("string"), "disabled": s("boolean"), "metadata": s("object")}))},
            "timeouts": obj(&[], json!({"connect_ms": s("integer"), "first_byte_ms": s("integer"), "idle_ms": s("integer")})),
            "retryable_status_codes": {"type": "array", "items": s("integer")},
            "headers": {"type": "object", "additionalProperties": s("string")},
            "paths": obj(&[], json!({"chat": s("string"), "responses": s("string"), "models": s("string"),
                                     "messages": s("string"), "gemini": s("string")})),
            "responses_api": s("boolean"),
        }),
    )
}

/// An update: neither `id` nor `api_keys` (keys have their own endpoints); `models: null` clears
/// the static list; nested settings change field by field (`null` removes a path override).
fn provider_update_body() -> Value {
    let mut body = provider_body(&[]);
    if let Some(props) = body["properties"].as_object_mut() {
        props.remove("id");
        props.remove("api_keys");
        props["models"]["type"] = json!(["array", "null"]);
        if let Some(paths) = props["paths"]["properties"].as_object_mut() {
            for path in paths.values_mut() {
                *path = nullable("string");
            }
        }
    }
    body
}

fn logical_body(required: &[&str]) -> Value {
    obj(
        required,
        json!({
            "id": s("string"),
            "description": nullable("string"),
            "upstreams": {"type": "array", "minItems": 1, "items": obj(&["provider", "model"], json!({
                "provider": s("string"), "model": s("string"),
                "weight": {"type": "number", "exclusiveMinimum": 0}, "priority": {"type": "integer", "minimum": 0}}))},
        }),
    )
}

/// The request body of `op`, when it takes one.
fn body_schema(op: Op) -> Option<Value> {
    Some(match op {
        Op::AdminInit => obj(
            &["username"],
            json!({"username": s("string"), "email": nullable("string"), "display_name": nullable("string")}),
        ),
        Op::Login => obj(
            &["username", "password"],
            json!({"username": s("string"), "password": s("string")}),
        ),
        Op::Refresh | Op::Revoke => obj(&["refresh_token"], json!({"refresh_token": s("string")})),
        Op::Logout => obj(&[], json!({"refresh_token": s("string")})),
        Op::UserCreate => obj(
            &["username"],
            json!({"username": s("string"), "password": s("string"), "role": {"type": "string", "enum": ["admin", "user"]},
                   "email": nullable("string"), "display_name": nullable("string"),
                   "key_allowed_providers": {"type": ["array", "null"], "items": {"type": "string"}},
                   "key_rate_limit_rps": {"type": ["integer", "null"], "minimum": 1}}),
        ),
        Op::UserUpdate => obj(
            &[],
            json!({"password": s("string"), "role": {"type": "string", "enum": ["admin", "user"]},
                   "email": nullable("string"), "display_name": nullable("string"), "disabled": s("boolean"),
                   "key_allowed_providers": {"type": ["array", "null"], "items": {"type": "string"}},
                   "key_rate_limit_rps": {"type": ["integer", "null"], "minimum": 1}}),
        ),
        Op::KeyCreate => key_body(&["name"]),
        Op::KeyUpdate => key_body(&[]),
        Op::ProviderCreate => provider_body(&["id", "base_url"]),
        Op::ProviderUpdate => provider_update_body(),
        Op::ProviderKeyCreate => obj(
            &["key"],
            json!({"key": s("string"), "qps_limit": {"type": ["integer", "null"], "minimum": 1}}),
        ),
        Op::ProviderKeyUpdate => obj(
            &[],
            json!({"key": s("string"), "qps_limit": {"type": ["integer", "null"], "minimum": 1}, "disabled": s("boolean")}),
        ),
        Op::LogicalCreate => logical_body(&["id", "upstreams"]),
        Op::LogicalUpdate => {
            let mut body = logical_body(&["upstreams"]);
            if let Some(props) = body["properties"].as_object_mut() {
                props.remove("id");
            }
            body
        }
        Op::RoutingDecide => obj(
            &["model"],
            json!({"model": s("string"), "session_id": nullable("string"),
                   "allowed_providers": {"type": ["array", "null"], "items": {"type": "string"}}}),
        ),
        _ => return None,
    })
}

fn query_params(op: Op) -> Vec<Value> {
    match op {
        Op::SessionGet => vec![json!({"name": "model", "in": "query", "required": false, "schema": s("string")})],
        Op::ProviderModels => {
            vec![json!({"name": "refresh", "in": "query", "required": false, "schema": s("boolean")})]
        }
        _ => Vec::new(),
    }
}

fn operation(spec: &RouteSpec) -> Value {
    let mut params: Vec<Value> = spec
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": s("string")}))
        .collect();
    params.extend(query_params(spec.op));
    let mut responses = json!({
        "400": {"$ref": "#/components/responses/Error"},
        "404": {"$ref": "#/components/responses/Error"},
    });
    match spec.op {
        Op::AdminInit
        | Op::UserCreate
        | Op::KeyCreate
        | Op::ProviderCreate
        | Op::ProviderKeyCreate
        | Op::LogicalCreate => {
            responses["201"] = json!({"description": "Created", "content": {"application/json": {}}});
            // A name already taken (or, for the first admin, a user already there).
            responses["409"] = json!({"$ref": "#/components/responses/Error"});
        }
        Op::KeyDelete | Op::ProviderDelete | Op::ProviderKeyDelete | Op::LogicalDelete => {
            responses["204"] = json!({"description": "Deleted"});
            // Still referenced, or defined in the config file.
            responses["409"] = json!({"$ref": "#/components/responses/Error"});
        }
        _ => responses["200"] = json!({"description": "Success", "content": {"application/json": {}}}),
    }
    if spec.access != Access::Public {
        responses["401"] = json!({"$ref": "#/components/responses/Error"});
    }
    if spec.access == Access::Admin {
        responses["403"] = json!({"$ref": "#/components/responses/Error"});
    }
    // A user who is not an admin changes things at a bounded rate (`throttle`).
    if spec.access == Access::User && spec.method != http::Method::GET {
        responses["429"] = json!({"$ref": "#/components/responses/Error"});
    }
    let mut op = json!({
        "operationId": format!("{:?}", spec.op),
        "summary": spec.summary,
        "tags": [spec.tag],
        "parameters": params,
        "responses": responses,
    });
    op["security"] = if spec.access == Access::Public {
        json!([])
    } else {
        json!([{"bearer": []}])
    };
    if spec.access == Access::Admin {
        op["x-required-role"] = json!("admin");
    }
    if let Some(schema) = body_schema(spec.op) {
        op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": schema}}});
    }
    op
}

pub fn document(specs: &[RouteSpec]) -> Value {
    let mut paths = Map::new();
    for spec in specs {
        let entry = paths.entry(spec.path.to_string()).or_insert_with(|| json!({}));
        entry[spec.method.as_str().to_ascii_lowercase()] = operation(spec);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "APIProxy admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Users, client API keys, providers, logical models and routing of an APIProxy gateway. \
                            Send `Authorization: Bearer <access token>` from POST /auth/login.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "responses": {"Error": {"description": "An error", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"error": {"type": "object", "properties": {
                    "message": s("string"), "type": s("string"), "field": s("string")}}}}}}}},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::router::routes;

    #[test]
    fn documents_every_route() {
        let specs = routes();
        let doc = document(&specs);
        for s in &specs {
            let op = &doc["paths"][s.path][s.method.as_str().to_ascii_lowercase()];
            assert!(op.is_object(), "{} {} missing", s.method, s.path);
        }
        assert_eq!(
            doc["paths"]["/users/{id}/api-keys/{key_id}"]["put"]["parameters"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
}
