//! Gemini generateContent request ↔ IR (formats.md §2.2). Accepts camelCase and snake_case, emits camelCase.

use std::collections::{HashMap, VecDeque};

use serde_json::{json, Map, Value};

use super::media_part;
use crate::formats::convert::{ConvertError, RequestOptions};
use crate::formats::ir::*;
use crate::formats::json::*;
use crate::formats::model_name;
use crate::formats::openai_chat::request::{empty_schema, text_block};

/// Gemini 3 rejects a replayed functionCall without a thought signature; for history that came from another
/// vendor, Google documents this value to skip the check.
const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

/// generateContent request → IR. Tool calls without ids get `call_<turn>_<n>`, and function responses are
/// paired with the previous model turn's calls by id, else by name in order.
pub fn parse(v: &Value) -> Result<IrRequest, ConvertError> {
    let mut ir = IrRequest::default();
    if get2(v, "cachedContent", "cached_content").is_some() {
        return Err(ConvertError::Unsupported(
            "`cachedContent` lives in Gemini's storage".into(),
        ));
    }
    if let Some(si) = get2(v, "systemInstruction", "system_instruction") {
        for p in arr_at(si, "parts") {
            if let Some(t) = str_at(p, "text") {
                ir.system.push(TextPart {
                    text: t.to_string(),
                    cache_control: None,
                });
            }
        }
    }
    let contents = v
        .get("contents")
        .and_then(Value::as_array)
        .ok_or_else(|| ConvertError::Invalid("`contents` must be an array".into()))?;
    // The calls of the last model turn, which the function responses after it answer (in one
    // content or several).
    let mut last_calls = TurnCalls::default();
    for (turn, c) in contents.iter().enumerate() {
        let role = match str_at(c, "role") {
            Some("model") => Role::Assistant,
            _ => Role::User,
        };
        let mut blocks = Vec::new();
        let mut calls = Vec::new();
        for p in arr_at(c, "parts") {
            let signature = get2(p, "thoughtSignature", "thought_signature")
                .and_then(Value::as_str)
                .map(|s| Signature {
                    vendor: Vendor::Gemini,
                    value: s.to_string(),
                });
            if let Some(t) = p.get("text").and_then(Value::as_str) {
                if p.get("thought").and_then(Value::as_bool) == Some(true) {
                    // Gemini's own thought summaries are not replayed to other vendors.
                    continue;
                }
                blocks.push(text_block(t));
            } else if let Some(media) = super::part_media(p) {
                blocks.push(media_block(media));
            } else if let Some(fc) = get2(p, "functionCall", "function_call") {
                let name = str_at(fc, "name").unwrap_or_default().to_string();
                let id = str_at(fc, "id")
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("call_{turn}_{}", calls.len()));
                calls.push((id.clone(), name.clone()));
                blocks.push(Block::ToolCall(ToolCall {
                    id,
                    name,
                    arguments: crate::formats::json::args_text(fc.get("args")),
                    signature,
                }));
            } else if let Some(fr) = get2(p, "functionResponse", "function_response") {
                let name = str_at(fr, "name").unwrap_or_default();
                let call_id = last_calls
                    .answer(str_at(fr, "id"), name)
                    .unwrap_or_else(|| str_at(fr, "id").unwrap_or(name).to_string());
                let response = fr.get("response").unwrap_or(&Value::Null);
                blocks.push(Block::ToolResult(ToolResult {
                    call_id,
                    content: vec![text_block(&response_text(response))],
                    is_error: response.get("error").is_some() && response.get("result").is_none(),
                }));
            } else if p.get("executableCode").is_some() || p.get("codeExecutionResult").is_some() {
                return Err(ConvertError::Unsupported(
                    "Gemini code execution parts cannot be translated".into(),
                ));
            }
        }
        if role == Role::Assistant {
            last_calls = TurnCalls::new(calls);
        }
        ir.messages.push(Message { role, content: blocks });
    }
    for t in arr_at(v, "tools") {
        let decls = get2(t, "functionDeclarations", "function_declarations");
        let Some(decls) = decls.and_then(Value::as_array) else {
            let kind = t.as_object().and_then(|o| o.keys().next().cloned()).unwrap_or_default();
            return Err(ConvertError::Unsupported(format!(
                "Gemini built-in tool `{kind}` cannot be translated; only functionDeclarations do"
            )));
        };
        for d in decls {
            let params = get2(d, "parametersJsonSchema", "parameters_json_schema")
                .or_else(|| d.get("parameters"))
                .cloned()
                .map(lower_openapi_types)
                .unwrap_or_else(empty_schema);
            ir.tools.push(Tool {
                name: str_at(d, "name").unwrap_or_default().to_string(),
                description: str_at(d, "description").map(str::to_string),
                parameters: params,
                strict: None,
                cache_control: None,
            });
        }
    }
    if let Some(fcc) =
        get2(v, "toolConfig", "tool_config").and_then(|tc| get2(tc, "functionCallingConfig", "function_calling_config"))
    {
        let allowed: Vec<&str> = get2(fcc, "allowedFunctionNames", "allowed_function_names")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        ir.tool_choice = match str_at(fcc, "mode") {
            Some("AUTO") | Some("VALIDATED") => Some(ToolChoice::Auto),
            Some("NONE") => Some(ToolChoice::None),
            Some("ANY") if allowed.len() == 1 => Some(ToolChoice::Tool(allowed[0].to_string())),
            Some("ANY") => {
                // A call of one of these, not of any tool: the others are not offered. (Other
                // formats name one tool or any; the earlier turns may still show the others.)
                if !allowed.is_empty() {
                    ir.tools.retain(|t| allowed.contains(&t.name.as_str()));
                }
                Some(ToolChoice::Required)
            }
            _ => None,
        };
    }
    if let Some(g) = get2(v, "generationConfig", "generation_config") {
        parse_generation_config(g, &mut ir)?;
    }
    Ok(ir)
}

fn media_block(m: Media) -> Block {
    if m.media_type().starts_with("image/") {
        Block::Image(m)
    } else {
        Block::File(m)
    }
}

/// A function response as tool-result text: `{"result": "…"}` unwrapped, anything else as JSON.
fn response_text(r: &Value) -> String {
    match r.as_object() {
        Some(o) if o.len() == 1 => match o.get("result").or_else(|| o.get("output")) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => r.to_string(),
        },
        _ => r.to_string(),
    }
}

/// Gemini's OpenAPI schemas use upper-case type names (`OBJECT`); JSON Schema wants lower case.
fn lower_openapi_types(mut v: Value) -> Value {
    fn walk(v: &mut Value, depth: usize) {
        if depth > 64 {
            return;
        }
        match v {
            Value::Object(o) => {
                if let Some(Value::String(t)) = o.get_mut("type") {
                    *t = t.to_ascii_lowercase();
                }
                // Gemini's own keywords, which JSON Schema has not: the order is Gemini's
                // business, and `nullable` is a branch that allows null.
                // (A property of those names has a schema, an object, for its value.)
                if o.get("propertyOrdering").is_some_and(Value::is_array) {
                    o.remove("propertyOrdering");
                }
                let nullable = match o.get("nullable") {
                    Some(Value::Bool(n)) => {
                        let n = *n;
                        o.remove("nullable");
                        n
                    }
                    _ => false,
                };
                for (_, x) in o.iter_mut() {
                    walk(x, depth + 1);
                }
                if nullable {
                    let schema = std::mem::take(o);
                    o.insert("anyOf".into(), json!([schema, {"type": "null"}]));
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| walk(x, depth + 1)),
            _ => {}
        }
    }
    walk(&mut v, 0);
    v
}

fn parse_generation_config(g: &Value, ir: &mut IrRequest) -> Result<(), ConvertError> {
    let num = |c: &str, s: &str| get2(g, c, s).and_then(Value::as_f64);
    let int = |c: &str, s: &str| get2(g, c, s).and_then(Value::as_u64);
    if int("candidateCount", "candidate_count").unwrap_or(1) > 1 {
        return Err(ConvertError::Unsupported(
            "candidateCount > 1 cannot be translated".into(),
        ));
    }
    ir.temperature = num("temperature", "temperature");
    ir.top_p = num("topP", "top_p");
    ir.top_k = int("topK", "top_k");
    ir.max_tokens = int("maxOutputTokens", "max_output_tokens");
    ir.seed = get2(g, "seed", "seed").and_then(Value::as_i64);
    ir.presence_penalty = num("presencePenalty", "presence_penalty");
    ir.frequency_penalty = num("frequencyPenalty", "frequency_penalty");
    ir.stop = get2(g, "stopSequences", "stop_sequences")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let mime = get2(g, "responseMimeType", "response_mime_type").and_then(Value::as_str);
    let schema = get2(g, "responseJsonSchema", "response_json_schema")
        .or_else(|| get2(g, "responseSchema", "response_schema"))
        .cloned();
    if mime == Some("application/json") || schema.is_some() {
        ir.response_format = Some(match schema {
            Some(s) => ResponseFormat::JsonSchema {
                name: "response".into(),
                schema: lower_openapi_types(s),
                strict: None,
            },
            None => ResponseFormat::JsonObject,
        });
    }
    if let Some(tc) = get2(g, "thinkingConfig", "thinking_config") {
        let budget = get2(tc, "thinkingBudget", "thinking_budget").and_then(Value::as_i64);
        let level = get2(tc, "thinkingLevel", "thinking_level")
            .and_then(Value::as_str)
            .and_then(Effort::parse);
        ir.reasoning = match (budget, level) {
            (Some(0), _) => None,
            (Some(b), _) if b > 0 => Some(Reasoning {
                effort: level.unwrap_or_else(|| Effort::from_budget(b as u64)),
                budget_tokens: Some(b as u64),
            }),
            (_, Some(effort)) => Some(Reasoning {
                effort,
                budget_tokens: None,
            }),
            // -1 (dynamic) or includeThoughts only.
            _ => Some(Reasoning {
                effort: Effort::Medium,
                budget_tokens: None,
            }),
        };
    }
    Ok(())
}

/// IR → generateContent body. No `model` or stream flag: both are in the URL.
pub fn render(ir: &IrRequest, opts: &RequestOptions) -> Result<Value, ConvertError> {
    let mut out = Map::new();
    let mut system: Vec<Value> = ir
        .system
        .iter()
        .filter(|t| !t.text.is_empty())
        .map(|t| json!({"text": t.text}))
        .collect();
    for m in ir.messages.iter().filter(|m| m.role == Role::System) {
        let t = join_text_with(&m.content, "\n\n");
        if !t.is_empty() {
            system.push(json!({"text": t}));
        }
    }
    // Gemini before 3 refuses JSON mode beside function declarations ("Function calling with a
    // response mime type: 'application/json' is unsupported"): there the JSON answer is asked for
    // in words, and the model stays free to call the client's tools first.
    // The model's version, read once: what it takes goes by it.
    let version = model_name::gemini_version(&model_name::bare(&opts.model));
    let json_in_words = !ir.tools.is_empty() && refuses_json_mode_beside_tools(version);
    if json_in_words {
        match &ir.response_format {
            Some(ResponseFormat::JsonObject) => {
                system.push(json!({"text": "Give your final answer as one JSON object, with no text around it."}));
            }
            Some(ResponseFormat::JsonSchema { schema, .. }) => {
                system.push(json!({"text": format!(
                    "Give your final answer as one JSON object, with no text around it, that matches this JSON Schema: {schema}"
                )}));
            }
            _ => {}
        }
    }
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({"parts": system}));
    }
    out.insert("contents".into(), render_contents(ir).into());
    if !ir.tools.is_empty() {
        let decls: Vec<Value> = ir
            .tools
            .iter()
            .map(|t| {
                // Full JSON Schema in `parametersJsonSchema`: no lossy OpenAPI-subset rewrite.
                let mut d = json!({"name": t.name, "parametersJsonSchema": t.parameters});
                if let Some(desc) = &t.description {
                    d["description"] = desc.clone().into();
                }
                d
            })
            .collect();
        out.insert("tools".into(), json!([{"functionDeclarations": decls}]));
        // Only with declarations: a `toolConfig` with none has nothing to choose from.
        if let Some(tc) = &ir.tool_choice {
            let fcc = match tc {
                ToolChoice::Auto => json!({"mode": "AUTO"}),
                ToolChoice::None => json!({"mode": "NONE"}),
                ToolChoice::Required => json!({"mode": "ANY"}),
                ToolChoice::Tool(n) => json!({"mode": "ANY", "allowedFunctionNames": [n]}),
            };
            out.insert("toolConfig".into(), json!({"functionCallingConfig": fcc}));
        }
    }
    let mut g = Map::new();
    put(&mut g, "temperature", ir.temperature);
    put(&mut g, "topP", ir.top_p);
    put(&mut g, "topK", ir.top_k);
    put(&mut g, "maxOutputTokens", ir.max_tokens);
    put(&mut g, "seed", ir.seed);
    // Gemini 2.5 and later refuse penalties ("Penalty is not enabled for models/…"), which other
    // vendors' clients send (often as 0, which says nothing anyway): only older models get them.
    if takes_penalties(version) {
        put(&mut g, "presencePenalty", ir.presence_penalty.filter(|p| *p != 0.0));
        put(&mut g, "frequencyPenalty", ir.frequency_penalty.filter(|p| *p != 0.0));
    }
    if ir.stop.len() > MAX_STOP_SEQUENCES {
        // Sending the first five would let the answer run past the others unnoticed.
        return Err(ConvertError::Unsupported(format!(
            "Gemini takes at most {MAX_STOP_SEQUENCES} stop sequences; this request has {}",
            ir.stop.len()
        )));
    }
    if !ir.stop.is_empty() {
        g.insert("stopSequences".into(), json!(ir.stop));
    }
    match &ir.response_format {
        _ if json_in_words => {}
        Some(ResponseFormat::JsonObject) => {
            g.insert("responseMimeType".into(), "application/json".into());
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            g.insert("responseMimeType".into(), "application/json".into());
            g.insert("responseJsonSchema".into(), schema.clone());
        }
        _ => {}
    }
    // Gemini 2.0 and Gemma cannot think: they refuse `thinkingConfig` with a 400.
    if let Some(r) = ir.reasoning.as_ref().filter(|_| gemini_thinks(version)) {
        // Budgets every thinking Gemini model takes: at most 2.5 Flash's 24,576, and when thinking
        // at all at least Flash-Lite's 512 (2.5 Pro's floor is 128). Claude Code asks for 31,999.
        let budget = match r.budget_tokens {
            Some(0) => 0,
            Some(n) => n.clamp(512, MAX_THINKING_BUDGET),
            None => match r.effort {
                // Gemini's Pro models cannot stop thinking (0 is refused): as little as they take.
                Effort::None if opts.model.contains("-pro") => 128,
                Effort::None => 0,
                Effort::Minimal => 512,
                Effort::Low => 1024,
                Effort::Medium => 8192,
                Effort::High | Effort::XHigh => MAX_THINKING_BUDGET,
            },
        };
        g.insert(
            "thinkingConfig".into(),
            json!({"thinkingBudget": budget, "includeThoughts": budget > 0}),
        );
    }
    if !g.is_empty() {
        out.insert("generationConfig".into(), g.into());
    }
    Ok(Value::Object(out))
}

/// Whether a Gemini model can think (2.5 and later); a model of another name (a Gemini-style API
/// in front of something else) is given the benefit of the doubt, Gemma and Gemini 1.x and 2.0
/// are not.
fn gemini_thinks(version: Option<(u32, u32)>) -> bool {
    version.is_none_or(|v| v >= (2, 5))
}

/// Whether the model refuses JSON mode (`responseMimeType`, a schema) beside function
/// declarations: Gemini before 3 and Gemma do; a model of another name is given the benefit of the
/// doubt.
fn refuses_json_mode_beside_tools(version: Option<(u32, u32)>) -> bool {
    version.is_some_and(|v| v < (3, 0))
}

/// Whether the model takes `presencePenalty` and `frequencyPenalty`: Gemini before 2.5 and Gemma.
fn takes_penalties(version: Option<(u32, u32)>) -> bool {
    version.is_some_and(|v| v < (2, 5))
}

/// The largest thinking budget every thinking Gemini model takes (2.5 Flash's).
const MAX_THINKING_BUDGET: u64 = 24_576;

/// `generationConfig.stopSequences` takes at most five.
const MAX_STOP_SEQUENCES: usize = 5;

fn render_contents(ir: &IrRequest) -> Vec<Value> {
    // call id → name, for functionResponse.name (looked up, never invented).
    let mut names: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    let mut out: Vec<(Role, Vec<Value>)> = Vec::with_capacity(ir.messages.len());
    for m in ir.messages.iter().filter(|m| m.role != Role::System) {
        let mut parts = Vec::with_capacity(m.content.len());
        let mut signed_first_call = false;
        for b in &m.content {
            match b {
                Block::Text(t) if t.text.is_empty() => {}
                Block::Text(t) => parts.push(json!({"text": t.text})),
                Block::Refusal(r) if !r.is_empty() => parts.push(json!({"text": r})),
                Block::Refusal(_) => {}
                Block::Image(media) | Block::File(media) => parts.push(media_part(media)),
                Block::ToolCall(tc) => {
                    names.insert(tc.id.as_str(), tc.name.as_str());
                    let mut p =
                        json!({"functionCall": {"name": tc.name, "args": args_object(&tc.arguments), "id": tc.id}});
                    match Signature::for_vendor(&tc.signature, Vendor::Gemini) {
                        Some(sig) => p["thoughtSignature"] = sig.into(),
                        None if !signed_first_call => p["thoughtSignature"] = SKIP_SIGNATURE.into(),
                        None => {}
                    }
                    signed_first_call = true;
                    parts.push(p);
                }
                Block::ToolResult(r) => {
                    let text = r.text();
                    let result = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
                    let key = if r.is_error { "error" } else { "result" };
                    let name = names.get(r.call_id.as_str()).copied().unwrap_or(r.call_id.as_str());
                    parts.push(json!({"functionResponse": {"name": name, "id": r.call_id, "response": {key: result}}}));
                    // An image or file the tool returned (a screenshot, a file read) follows its
                    // response in the same turn: the response itself carries only JSON.
                    for b in &r.content {
                        if let Block::Image(media) | Block::File(media) = b {
                            parts.push(media_part(media));
                        }
                    }
                }
                // Gemini thoughts are not replayed as parts; their signatures ride on the functionCall parts.
                Block::Thinking { .. } | Block::RedactedThinking { .. } => {}
            }
        }
        if parts.is_empty() {
            continue;
        }
        match out.last_mut() {
            // Consecutive same-role turns merge: all functionResponses of one model turn in ONE user turn.
            Some((role, prev)) if *role == m.role => prev.extend(parts),
            _ => out.push((m.role, parts)),
        }
    }
    out.into_iter()
        .map(|(role, parts)| json!({"role": if role == Role::Assistant { "model" } else { "user" }, "parts": parts}))
        .collect()
}
/// A Gemini request as Gemini 3 takes it: the first `functionCall` of each model turn carries a
/// thought signature, and one without (a turn another vendor answered, relayed to this client in
/// its format, then replayed) gets the value Google documents to skip the check, as the translated
/// path gives it. `None` when every such call is signed; the rare body that changes is written anew.
pub fn with_signed_calls(body: &[u8]) -> Option<Vec<u8>> {
    use memchr::memmem::Finder;
    // Built once: a searcher made per request costs more than the search over a small body.
    static MARKS: std::sync::LazyLock<[Finder<'static>; 2]> =
        std::sync::LazyLock::new(|| [Finder::new("functionCall"), Finder::new("function_call")]);
    if MARKS.iter().all(|m| m.find(body).is_none()) {
        return None;
    }
    let mut top: Value = serde_json::from_slice(body).ok()?;
    let mut changed = false;
    for turn in top.get_mut("contents")?.as_array_mut()? {
        if turn.get("role").and_then(Value::as_str) != Some("model") {
            continue;
        }
        let Some(parts) = turn.get_mut("parts").and_then(Value::as_array_mut) else {
            continue;
        };
        let first_call = parts
            .iter_mut()
            .find(|p| p.get("functionCall").is_some() || p.get("function_call").is_some());
        if let Some(call) = first_call.and_then(Value::as_object_mut) {
            if !call.contains_key("thoughtSignature") && !call.contains_key("thought_signature") {
                let key = if call.contains_key("function_call") {
                    "thought_signature"
                } else {
                    "thoughtSignature"
                };
                call.insert(key.into(), SKIP_SIGNATURE.into());
                changed = true;
            }
        }
    }
    changed.then(|| serde_json::to_vec(&top).ok()).flatten()
}

/// A Gemini-shaped body sent to `/v1/chat/completions` as it must reach Gemini: without the
/// OpenAI fields the gateway read from it (`model`, `stream`, `stream_options`), which Gemini
/// refuses as unknown ("Invalid JSON payload received. Unknown name"). `None` when it has none.
pub fn without_openai_fields(body: &[u8]) -> Option<Vec<u8>> {
    let mut top: serde_json::Map<String, Value> = serde_json::from_slice(body).ok()?;
    let removed = ["model", "stream", "stream_options"]
        .iter()
        .filter(|k| top.remove(**k).is_some())
        .count();
    (removed > 0).then(|| serde_json::to_vec(&top).ok()).flatten()
}

/// A model turn's function calls, `(id, name)` in order, for pairing the responses that follow:
/// by id when a response names one, else the first call of its name not answered yet. Looked up
/// by map, so a turn of many calls and many responses costs no more than reading them.
#[derive(Default)]
struct TurnCalls {
    calls: Vec<(String, String)>,
    by_id: HashMap<String, usize>,
    /// Per name, the calls not answered yet, first first.
    open: HashMap<String, VecDeque<usize>>,
    answered: Vec<bool>,
}

impl TurnCalls {
    fn new(calls: Vec<(String, String)>) -> Self {
        let mut by_id = HashMap::with_capacity(calls.len());
        let mut open: HashMap<String, VecDeque<usize>> = HashMap::new();
        for (i, (id, name)) in calls.iter().enumerate() {
            by_id.entry(id.clone()).or_insert(i);
            open.entry(name.clone()).or_default().push_back(i);
        }
        let answered = vec![false; calls.len()];
        Self {
            calls,
            by_id,
            open,
            answered,
        }
    }

    /// The id of the call a response (`id`, `name`) answers, marked answered.
    fn answer(&mut self, id: Option<&str>, name: &str) -> Option<String> {
        let i = match id.and_then(|id| self.by_id.get(id)) {
            Some(&i) => i,
            None => {
                let queue = self.open.get_mut(name)?;
                loop {
                    let i = queue.pop_front()?;
                    if !self.answered[i] {
                        break i;
                    }
                }
            }
        };
        self.answered[i] = true;
        Some(self.calls[i].0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gemini's OpenAPI-style schema as JSON Schema: types in lower case, `nullable` as a null
    /// branch, no `propertyOrdering`; properties of those names stay properties.
    #[test]
    fn openapi_schemas_become_json_schema() {
        let schema = json!({"type": "OBJECT", "propertyOrdering": ["a", "nullable"], "properties": {
            "a": {"type": "STRING", "nullable": true, "description": "maybe"},
            "nullable": {"type": "BOOLEAN"},
            "propertyOrdering": {"type": "INTEGER"}}});
        assert_eq!(
            lower_openapi_types(schema),
            json!({"type": "object", "properties": {
                "a": {"anyOf": [{"type": "string", "description": "maybe"}, {"type": "null"}]},
                "nullable": {"type": "boolean"},
                "propertyOrdering": {"type": "integer"}}})
        );
    }

    /// `ANY` with several allowed names: a call of one of them, so only they are offered.
    #[test]
    fn any_of_some_functions_offers_only_those() {
        let decl = |n: &str| json!({"name": n, "parameters": {"type": "OBJECT"}});
        let body = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "tools": [{"functionDeclarations": [decl("a"), decl("b"), decl("c")]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["a", "c"]}}});
        let ir = parse(&body).unwrap();
        assert_eq!(ir.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(ir.tool_choice, Some(ToolChoice::Required));
    }

    #[test]
    fn an_unsigned_first_call_of_a_model_turn_gets_the_skip_value() {
        let body = json!({"contents": [
            {"role": "user", "parts": [{"text": "weather?"}]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "a", "args": {}}},
                {"functionCall": {"name": "b", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "a", "response": {}}}]},
            {"role": "model", "parts": [{"functionCall": {"name": "c", "args": {}}, "thoughtSignature": "c2ln"}]}]});
        let out: Value = serde_json::from_slice(&with_signed_calls(body.to_string().as_bytes()).unwrap()).unwrap();
        assert_eq!(out["contents"][1]["parts"][0]["thoughtSignature"], SKIP_SIGNATURE);
        assert!(
            out["contents"][1]["parts"][1].get("thoughtSignature").is_none(),
            "only the first call"
        );
        assert_eq!(out["contents"][3], body["contents"][3]);
        let signed = json!({"contents": [body["contents"][3].clone()]});
        assert!(with_signed_calls(signed.to_string().as_bytes()).is_none());
    }
}
