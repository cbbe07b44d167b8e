//! Anthropic Messages events → stream events (formats.md §4.1, §4.6). Dispatches on the JSON `type`, which
//! equals the event name.

use serde_json::Value;

use super::{parse_stop_reason, JSON_TOOL};
use crate::formats::ir::{FinishReason, Signature, Vendor};
use crate::formats::json::*;
use crate::formats::stream::events::{Decode, StreamEvent};
use crate::formats::usage::Usage;

/// What an upstream content block index carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Text,
    Thinking,
    /// A tool call with its dense tool index.
    Tool(usize),
    /// The forced JSON-mode tool: its input is streamed as text.
    JsonText,
    Other,
}

#[derive(Debug, Default)]
pub struct AnthropicDecoder {
    /// Upstream block index → kind (indices are small and contiguous; bounded by the stream).
    blocks: Vec<(u64, BlockKind)>,
    tools: usize,
    usage: Option<Usage>,
    json_mode: bool,
    /// A JSON-mode answer's text, held until it is known whether the JSON tool follows: its
    /// input is then the whole answer (text beside it would make it no JSON); anything else
    /// first, and the text goes out. `None` once that is known, or when not in JSON mode.
    held: Option<String>,
    finished: bool,
    stopped: bool,
    errored: bool,
}

impl AnthropicDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// For a request the gateway sent in JSON mode (`json_tool_call`; see `held`).
    pub fn json_mode(json_mode: bool) -> Self {
        Self {
            held: json_mode.then(String::new),
            ..Self::default()
        }
    }

    fn text(&mut self, t: &str, out: &mut Vec<StreamEvent>) {
        match &mut self.held {
            Some(held) => held.push_str(t),
            None => out.push(StreamEvent::Text(t.to_string())),
        }
    }

    /// Sends held text on: something other than the JSON tool came after it.
    fn release_held(&mut self, out: &mut Vec<StreamEvent>) {
        if let Some(held) = self.held.take().filter(|h| !h.is_empty()) {
            out.push(StreamEvent::Text(held));
            out.push(StreamEvent::BlockStop);
        }
    }

    fn kind(&self, index: u64) -> BlockKind {
        self.blocks
            .iter()
            .rev()
            .find(|(i, _)| *i == index)
            .map_or(BlockKind::Other, |(_, k)| *k)
    }
}

impl Decode for AnthropicDecoder {
    fn decode(&mut self, _event: Option<&str>, data: &str, out: &mut Vec<StreamEvent>) {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        match str_at(&v, "type") {
            Some("message_start") => {
                let m = v.get("message").unwrap_or(&Value::Null);
                out.push(StreamEvent::Meta {
                    id: str_at(m, "id").map(str::to_string),
                    model: str_at(m, "model").map(str::to_string),
                    created: None,
                });
                if let Some(u) = m.get("usage").and_then(Usage::from_anthropic) {
                    self.usage = Some(u.clone());
                    out.push(StreamEvent::Usage(u));
                }
            }
            Some("content_block_start") => {
                let index = u64_at(&v, "index").unwrap_or(0);
                let b = v.get("content_block").unwrap_or(&Value::Null);
                match (str_at(b, "type"), str_at(b, "name")) {
                    (Some("text"), _) => {}
                    (Some("tool_use"), Some(JSON_TOOL)) => self.held = None,
                    _ => self.release_held(out),
                }
                let kind = match str_at(b, "type") {
                    Some("text") => {
                        if let Some(t) = str_at(b, "text").filter(|t| !t.is_empty()) {
                            self.text(t, out);
                        }
                        BlockKind::Text
                    }
                    Some("thinking") => {
                        if let Some(t) = str_at(b, "thinking").filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::Thinking(t.to_string()));
                        }
                        BlockKind::Thinking
                    }
                    Some("redacted_thinking") => {
                        out.push(StreamEvent::RedactedThinking(
                            str_at(b, "data").unwrap_or_default().to_string(),
                        ));
                        BlockKind::Other
                    }
                    Some("image") => {
                        out.extend(super::response::image_of(b).map(StreamEvent::Image));
                        BlockKind::Other
                    }
                    Some("tool_use") if str_at(b, "name") == Some(JSON_TOOL) => {
                        self.json_mode = true;
                        // As for any tool: an input sent whole here, not as deltas, is the answer.
                        if let Some(input) = b.get("input").filter(|i| i.as_object().is_some_and(|o| !o.is_empty())) {
                            out.push(StreamEvent::Text(input.to_string()));
                        }
                        BlockKind::JsonText
                    }
                    Some("tool_use") => {
                        let k = self.tools;
                        self.tools += 1;
                        out.push(StreamEvent::ToolStart {
                            index: k,
                            id: str_at(b, "id")
                                .filter(|id| !id.is_empty())
                                .map_or_else(|| new_id("toolu_"), str::to_string),
                            name: str_at(b, "name").unwrap_or_default().to_string(),
                            signature: None,
                        });
                        // `input` starts as `{}` and is NOT the first argument fragment (Helicone's bug); some
                        // proxies send the whole input here instead of deltas.
                        if let Some(input) = b.get("input").filter(|i| i.as_object().is_some_and(|o| !o.is_empty())) {
                            out.push(StreamEvent::ToolArgs {
                                index: k,
                                delta: input.to_string(),
                            });
                        }
                        BlockKind::Tool(k)
                    }
                    _ => BlockKind::Other,
                };
                if self.blocks.len() < 4096 {
                    self.blocks.push((index, kind));
                }
            }
            Some("content_block_delta") => {
                let index = u64_at(&v, "index").unwrap_or(0);
                let d = v.get("delta").unwrap_or(&Value::Null);
                let kind = self.kind(index);
                match (str_at(d, "type"), kind) {
                    (Some("text_delta"), _) => {
                        if let Some(t) = str_at(d, "text").filter(|t| !t.is_empty()) {
                            self.text(t, out);
                        }
                    }
                    (Some("thinking_delta"), _) => {
                        if let Some(t) = str_at(d, "thinking").filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::Thinking(t.to_string()));
                        }
                    }
                    (Some("signature_delta"), _) => {
                        if let Some(s) = str_at(d, "signature").filter(|s| !s.is_empty()) {
                            out.push(StreamEvent::Signature(Signature {
                                vendor: Vendor::Anthropic,
                                value: s.to_string(),
                            }));
                        }
                    }
                    (Some("input_json_delta"), BlockKind::Tool(k)) => {
                        if let Some(p) = str_at(d, "partial_json").filter(|p| !p.is_empty()) {
                            out.push(StreamEvent::ToolArgs {
                                index: k,
                                delta: p.to_string(),
                            });
                        }
                    }
                    (Some("input_json_delta"), BlockKind::JsonText) => {
                        if let Some(p) = str_at(d, "partial_json").filter(|p| !p.is_empty()) {
                            out.push(StreamEvent::Text(p.to_string()));
                        }
                    }
                    // citations_delta and future types: ignored (forward-compatible).
                    _ => {}
                }
            }
            // A held text block's end goes with its text.
            Some("content_block_stop") if self.held.is_some() => {}
            Some("content_block_stop") => out.push(StreamEvent::BlockStop),
            Some("message_delta") => {
                self.release_held(out);
                let usage = self.usage.get_or_insert_with(Usage::default);
                if let Some(u) = v.get("usage") {
                    usage.merge_anthropic(u);
                }
                out.push(StreamEvent::Usage(usage.clone()));
                let d = v.get("delta").unwrap_or(&Value::Null);
                if let Some(sr) = str_at(d, "stop_reason") {
                    self.finished = true;
                    let mut reason = parse_stop_reason(sr);
                    // The JSON-mode tool's call is the answer; a call of the client's own tools
                    // beside it keeps the finish a tool call.
                    if self.json_mode && self.tools == 0 && reason == FinishReason::ToolCalls {
                        reason = FinishReason::Stop;
                    }
                    out.push(StreamEvent::Finish {
                        reason,
                        stop_sequence: str_at(d, "stop_sequence").map(str::to_string),
                    });
                }
            }
            Some("message_stop") => self.stopped = true,
            Some("error") => {
                self.errored = true;
                let e = v.get("error").unwrap_or(&Value::Null);
                out.push(StreamEvent::Error {
                    message: str_at(e, "message").unwrap_or("upstream error").to_string(),
                    code: str_at(e, "type").unwrap_or("api_error").to_string(),
                });
            }
            // ping and unknown events.
            _ => {}
        }
    }

    fn completed(&self) -> bool {
        self.stopped || self.finished
    }

    fn terminated(&self) -> bool {
        self.stopped
    }

    fn errored(&self) -> bool {
        self.errored
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.clone()
    }
}
