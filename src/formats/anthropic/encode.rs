//! Stream events → Anthropic Messages events (formats.md §4.3): contiguous block indices from 0, every stop
//! matching a start, message_delta held until usage is final.

use serde_json::{json, Value};

use super::stop_reason_str;
use crate::formats::error_map::anthropic_error_type;
use crate::formats::ir::{sanitize_tool_id, smuggle_signature, FinishReason, Vendor};
use crate::formats::json::new_id;
use crate::formats::stream::events::{write_event, Encode, StreamEvent};
use crate::formats::usage::Usage;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
    Tool(usize),
}

struct HeldTool {
    index: usize,
    id: String,
    name: String,
    arguments: String,
}

pub struct AnthropicEncoder {
    model: String,
    id: String,
    input_estimate: u64,
    started: bool,
    open: Option<(usize, Open)>,
    next_index: usize,
    /// Dense tool index → the block index it was given.
    tool_blocks: Vec<usize>,
    /// Tool calls that started while another one was streaming: held whole (their arguments
    /// gathered) until the tool calls are over, because an OpenAI-compatible upstream may still
    /// interleave arguments of the streaming one (formats.md §4.3).
    held_tools: Vec<HeldTool>,
    saw_tool_call: bool,
    usage: Option<Usage>,
    /// Bytes of text, thinking and tool arguments sent: an output estimate when the upstream
    /// reports no usage.
    output_bytes: u64,
    finish: Option<(FinishReason, Option<String>)>,
    closed: bool,
    /// Whitespace that would open a text block, held until text follows it: a block of whitespace
    /// alone (the "\n\n" some models write before a tool call) is refused by Anthropic when
    /// Claude Code sends the turn back.
    held_space: String,
}

impl AnthropicEncoder {
    /// `input_estimate`: a local input-token estimate for message_start when the upstream reports usage only at
    /// the end (OpenAI); never 0, since Claude Code reads it.
    pub fn new(model: &str, input_estimate: u64) -> Self {
        Self {
            model: model.to_string(),
            id: new_id("msg_"),
            input_estimate: input_estimate.max(1),
            started: false,
            open: None,
            next_index: 0,
            tool_blocks: Vec::new(),
            held_tools: Vec::new(),
            saw_tool_call: false,
            usage: None,
            output_bytes: 0,
            finish: None,
            closed: false,
            held_space: String::new(),
        }
    }

    fn ensure_started(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let mut usage = self.usage.clone().unwrap_or_default();
        if usage.input_tokens == 0 {
            usage.input_tokens = self.input_estimate;
        }
        let mut u = usage.to_anthropic();
        // The placeholder output count, as Anthropic sends it; the real one comes in message_delta.
        u["output_tokens"] = 1.into();
        write_event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": {"id": self.id, "type": "message", "role": "assistant",
                "model": self.model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": u}}),
        );
    }

    /// Closes the open block; after a tool call, the calls held behind it follow, each whole: one
    /// block with its arguments in one delta.
    fn close_block(&mut self, out: &mut Vec<u8>) {
        self.stop_open_block(out);
        for t in std::mem::take(&mut self.held_tools) {
            let block = self.start_tool_block(t.index, &t.id, &t.name, out);
            if !t.arguments.is_empty() {
                Self::delta(
                    out,
                    block,
                    json!({"type": "input_json_delta", "partial_json": t.arguments}),
                );
            }
            self.stop_open_block(out);
        }
    }

    fn stop_open_block(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.open.take() {
            write_event(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    fn start_tool_block(&mut self, index: usize, id: &str, name: &str, out: &mut Vec<u8>) -> usize {
        let block = self.next_index;
        self.next_index += 1;
        self.open = Some((block, Open::Tool(index)));
        if self.tool_blocks.len() == index {
            self.tool_blocks.push(block);
        }
        write_event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": block,
                "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
        );
        block
    }

    /// A block that comes whole: its start, then its stop.
    fn whole_block(&mut self, block: Value, out: &mut Vec<u8>) {
        self.ensure_started(out);
        self.close_block(out);
        let index = self.next_index;
        self.next_index += 1;
        write_event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        write_event(
            out,
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        );
    }

    /// Opens a block of `kind` unless one is open already; returns its index.
    fn open_block(&mut self, kind: Open, block: Value, out: &mut Vec<u8>) -> usize {
        if let Some((index, k)) = self.open {
            if k == kind {
                return index;
            }
        }
        self.ensure_started(out);
        self.close_block(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((index, kind));
        write_event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        index
    }

    /// The usage of `message_delta`. The SDK lets each field it carries replace the one of
    /// `message_start`, so a count the upstream did not report is never sent as 0: the input
    /// keeps its estimate, and without any usage the output is estimated from what was sent.
    fn final_usage(&self) -> Value {
        match &self.usage {
            Some(u) => {
                let mut v = u.to_anthropic();
                if u.input_tokens == 0 {
                    v["input_tokens"] = self.input_estimate.into();
                }
                v
            }
            None => json!({"output_tokens": (self.output_bytes / 4).max(1)}),
        }
    }

    fn delta(out: &mut Vec<u8>, index: usize, delta: Value) {
        write_event(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        );
    }
}

impl Encode for AnthropicEncoder {
    fn encode(&mut self, event: StreamEvent, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        // A refusal is the answer's text for an Anthropic client.
        let event = match event {
            StreamEvent::Refusal(t) => StreamEvent::Text(t),
            e => e,
        };
        // Held whitespace is dropped when anything but text or bookkeeping comes next.
        if !matches!(
            event,
            StreamEvent::Text(_) | StreamEvent::Usage(_) | StreamEvent::Meta { .. }
        ) {
            self.held_space.clear();
        }
        match event {
            StreamEvent::Meta { id: Some(id), .. } => self.id = id,
            StreamEvent::Usage(u) => self.usage = Some(u),
            StreamEvent::Text(t) if !t.is_empty() => {
                self.output_bytes += t.len() as u64;
                let opening = !matches!(self.open, Some((_, Open::Text)));
                if opening && t.trim().is_empty() {
                    self.held_space.push_str(&t);
                    return;
                }
                let t = if self.held_space.is_empty() {
                    t
                } else {
                    std::mem::take(&mut self.held_space) + &t
                };
                let i = self.open_block(Open::Text, json!({"type": "text", "text": ""}), out);
                Self::delta(out, i, json!({"type": "text_delta", "text": t}));
            }
            StreamEvent::Thinking(t) if !t.is_empty() => {
                self.output_bytes += t.len() as u64;
                let i = self.open_block(
                    Open::Thinking,
                    json!({"type": "thinking", "thinking": "", "signature": ""}),
                    out,
                );
                Self::delta(out, i, json!({"type": "thinking_delta", "thinking": t}));
            }
            StreamEvent::Signature(sig) => {
                // Only Claude's own signatures, and only into an open thinking block.
                if let (Some((i, Open::Thinking)), Vendor::Anthropic) = (self.open, sig.vendor) {
                    Self::delta(out, i, json!({"type": "signature_delta", "signature": sig.value}));
                }
            }
            StreamEvent::RedactedThinking(data) => {
                self.whole_block(json!({"type": "redacted_thinking", "data": data}), out)
            }
            StreamEvent::Image(m) => self.whole_block(super::response::image_block(&m), out),
            StreamEvent::ToolStart {
                index,
                id,
                name,
                signature,
            } => {
                self.saw_tool_call = true;
                self.ensure_started(out);
                let id = sanitize_tool_id(&smuggle_signature(&id, &signature));
                if matches!(self.open, Some((_, Open::Tool(_)))) {
                    // Another call is streaming and may still get arguments: this one waits whole.
                    self.held_tools.push(HeldTool {
                        index,
                        id,
                        name,
                        arguments: String::new(),
                    });
                } else {
                    self.close_block(out);
                    self.start_tool_block(index, &id, &name, out);
                }
            }
            StreamEvent::ToolArgs { index, delta } if !delta.is_empty() => {
                self.output_bytes += delta.len() as u64;
                if let Some(t) = self.held_tools.iter_mut().find(|t| t.index == index) {
                    t.arguments.push_str(&delta);
                    return;
                }
                // Args belong to the open tool block; a call already closed (only a whole Gemini
                // call is, which gets no more) keeps its block index, as the SDK accumulates by index.
                let block = match self.open {
                    Some((b, Open::Tool(k))) if k == index => Some(b),
                    _ => self.tool_blocks.get(index).copied(),
                };
                if let Some(b) = block {
                    Self::delta(out, b, json!({"type": "input_json_delta", "partial_json": delta}));
                }
            }
            StreamEvent::BlockStop => self.close_block(out),
            StreamEvent::Finish { reason, stop_sequence } => {
                self.ensure_started(out);
                self.close_block(out);
                // Held until the end: an OpenAI upstream sends usage after the finish chunk.
                self.finish.get_or_insert((reason, stop_sequence));
            }
            StreamEvent::Error { message, code } => self.fail(&message, &code, out),
            _ => {}
        }
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        self.ensure_started(out);
        self.close_block(out);
        self.closed = true;
        let (reason, stop_sequence) = self.finish.take().unwrap_or((FinishReason::Stop, None));
        let reason = if self.saw_tool_call && reason == FinishReason::Stop {
            FinishReason::ToolCalls
        } else {
            reason
        };
        let usage = self.final_usage();
        let stop_sequence = if reason == FinishReason::StopSequence {
            stop_sequence.map_or(Value::Null, Value::from)
        } else {
            Value::Null
        };
        write_event(
            out,
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": stop_reason_str(reason), "stop_sequence": stop_sequence},
                "usage": usage}),
        );
        write_event(out, "message_stop", &json!({"type": "message_stop"}));
    }

    fn fail(&mut self, message: &str, code: &str, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        self.closed = true;
        // No message_stop: the SDK raises on `event: error` (a clean stop would look like success).
        write_event(
            out,
            "error",
            &json!({"type": "error", "error": {"type": anthropic_error_type(code), "message": message}}),
        );
    }
}
