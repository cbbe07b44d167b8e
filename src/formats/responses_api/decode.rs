//! OpenAI Responses events → stream events (formats.md §4.1, §4.5).

use serde_json::Value;

use crate::formats::ir::FinishReason;
use crate::formats::json::*;
use crate::formats::stream::events::{Decode, StreamEvent};
use crate::formats::usage::Usage;

#[derive(Debug, Default)]
pub struct ResponsesDecoder {
    started: bool,
    /// function_call item id → dense tool index (own counter over function_call items, never output_index).
    tools: Vec<String>,
    usage: Option<Usage>,
    completed: bool,
    errored: bool,
    /// The response's id, which a later request names as `previous_response_id`.
    id: Option<String>,
}

impl ResponsesDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    fn meta(&mut self, r: &Value, out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            self.id = str_at(r, "id").map(str::to_string);
            out.push(StreamEvent::Meta {
                id: str_at(r, "id").map(str::to_string),
                model: str_at(r, "model").map(str::to_string),
                created: u64_at(r, "created_at"),
            });
        }
    }

    fn tool_of(&self, v: &Value) -> Option<usize> {
        let id = str_at(v, "item_id")?;
        self.tools.iter().position(|t| t == id)
    }
}

impl Decode for ResponsesDecoder {
    fn decode(&mut self, _event: Option<&str>, data: &str, out: &mut Vec<StreamEvent>) {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        let r = v.get("response").unwrap_or(&Value::Null);
        match str_at(&v, "type").unwrap_or_default() {
            "response.created" | "response.in_progress" => self.meta(r, out),
            "response.output_item.added" => {
                self.meta(r, out);
                let item = v.get("item").unwrap_or(&Value::Null);
                if str_at(item, "type") == Some("function_call") {
                    let k = self.tools.len();
                    self.tools.push(str_at(item, "id").unwrap_or_default().to_string());
                    out.push(StreamEvent::ToolStart {
                        index: k,
                        id: str_at(item, "call_id").map_or_else(|| new_id("call_"), str::to_string),
                        name: str_at(item, "name").unwrap_or_default().to_string(),
                        signature: None,
                    });
                    if let Some(a) = str_at(item, "arguments").filter(|a| !a.is_empty()) {
                        out.push(StreamEvent::ToolArgs {
                            index: k,
                            delta: a.to_string(),
                        });
                    }
                }
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                if let Some(d) = str_at(&v, "delta").filter(|d| !d.is_empty()) {
                    out.push(StreamEvent::Text(d.to_string()));
                }
            }
            // A summary of several parts: a paragraph break between them, as a whole answer's parts
            // are joined.
            "response.reasoning_summary_part.added" if u64_at(&v, "summary_index").is_some_and(|i| i > 0) => {
                out.push(StreamEvent::Thinking("\n\n".into()));
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                if let Some(d) = str_at(&v, "delta").filter(|d| !d.is_empty()) {
                    out.push(StreamEvent::Thinking(d.to_string()));
                }
            }
            "response.function_call_arguments.delta" => {
                if let (Some(k), Some(d)) = (self.tool_of(&v), str_at(&v, "delta").filter(|d| !d.is_empty())) {
                    out.push(StreamEvent::ToolArgs {
                        index: k,
                        delta: d.to_string(),
                    });
                }
            }
            "response.output_item.done" => out.push(StreamEvent::BlockStop),
            "response.completed" | "response.incomplete" => {
                self.meta(r, out);
                self.completed = true;
                if let Some(u) = r.get("usage").and_then(Usage::from_responses) {
                    self.usage = Some(u.clone());
                    out.push(StreamEvent::Usage(u));
                }
                let reason = r.get("incomplete_details").and_then(|d| str_at(d, "reason"));
                let reason = match (str_at(r, "status"), reason) {
                    (Some("incomplete"), Some("content_filter")) => FinishReason::ContentFilter,
                    (Some("incomplete"), _) => FinishReason::Length,
                    _ if !self.tools.is_empty() => FinishReason::ToolCalls,
                    _ => FinishReason::Stop,
                };
                out.push(StreamEvent::Finish {
                    reason,
                    stop_sequence: None,
                });
            }
            "response.failed" | "error" => {
                self.errored = true;
                let e = r.get("error").filter(|e| e.is_object()).unwrap_or(&v);
                out.push(StreamEvent::Error {
                    message: str_at(e, "message").unwrap_or("upstream error").to_string(),
                    code: str_at(e, "code").unwrap_or("upstream_error").to_string(),
                });
            }
            _ => {}
        }
    }

    fn response_id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    fn completed(&self) -> bool {
        self.completed
    }

    fn errored(&self) -> bool {
        self.errored
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.clone()
    }
}
