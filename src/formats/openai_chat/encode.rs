//! Stream events → OpenAI Chat chunks (formats.md §4.2).

use serde_json::{json, Value};

use super::finish_str;
use crate::formats::ir::{smuggle_signature, FinishReason, Signature, Vendor};
use crate::formats::json::{new_id, now_secs};
use crate::formats::stream::events::{write_data, Encode, StreamEvent};
use crate::formats::usage::Usage;

pub struct ChatEncoder {
    model: String,
    include_usage: bool,
    id: String,
    created: u64,
    role_sent: bool,
    saw_tool_call: bool,
    /// Tool calls (indices) that have had no arguments yet: given `{}` before the finish, as
    /// OpenAI gives a call without parameters (Claude streams none), since clients parse them.
    argless: Vec<usize>,
    /// Thinking text of the block in progress, for `thinking_blocks` when a signature arrives (bounded by the
    /// converter's accumulation cap).
    thinking: String,
    /// `thinking_blocks` entries sent so far: each carries its `index`, by which the OpenAI SDK's
    /// stream helper merges list entries (a second entry without one makes it raise).
    thinking_blocks: usize,
    /// Images the model made, held to go out together just before the finish: the OpenAI JS SDK's
    /// stream helper keeps the last `images` of a delta, not every one (Python's merges entries
    /// by their `index`).
    images: Vec<Value>,
    usage: Option<Usage>,
    finish: Option<FinishReason>,
    closed: bool,
}

impl ChatEncoder {
    pub fn new(model: &str, include_usage: bool) -> Self {
        Self {
            model: model.to_string(),
            include_usage,
            id: new_id("chatcmpl-"),
            created: now_secs(),
            role_sent: false,
            saw_tool_call: false,
            argless: Vec::new(),
            thinking: String::new(),
            thinking_blocks: 0,
            images: Vec::new(),
            usage: None,
            finish: None,
            closed: false,
        }
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>, out: &mut Vec<u8>) {
        let mut c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            // Always 0: the choice index, never a block index.
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        write_data(out, &c);
    }

    fn next_thinking_block(&mut self) -> usize {
        self.thinking_blocks += 1;
        self.thinking_blocks - 1
    }

    fn ensure_role(&mut self, out: &mut Vec<u8>) {
        if !self.role_sent {
            self.role_sent = true;
            self.chunk(json!({"role": "assistant", "content": ""}), None, out);
        }
    }
}

impl Encode for ChatEncoder {
    fn encode(&mut self, event: StreamEvent, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        match event {
            StreamEvent::Meta { id, created, .. } => {
                if let Some(id) = id {
                    self.id = id;
                }
                if let Some(c) = created {
                    self.created = c;
                }
                self.ensure_role(out);
            }
            StreamEvent::Text(t) => {
                self.ensure_role(out);
                self.chunk(json!({"content": t}), None, out);
            }
            StreamEvent::Refusal(t) => {
                self.ensure_role(out);
                self.chunk(json!({"refusal": t}), None, out);
            }
            StreamEvent::Image(m) => {
                self.ensure_role(out);
                let entry = super::image_entry(self.images.len(), &m);
                self.images.push(entry);
            }
            StreamEvent::Thinking(t) => {
                self.ensure_role(out);
                if self.thinking.len() < 16 << 20 {
                    self.thinking.push_str(&t);
                }
                // Non-standard `reasoning_content` (DeepSeek/LiteLLM convention); standard clients ignore it.
                self.chunk(json!({"reasoning_content": t}), None, out);
            }
            StreamEvent::Signature(sig) => {
                if let Some(s) = Signature::for_vendor(&Some(sig.clone()), Vendor::Anthropic) {
                    let text = std::mem::take(&mut self.thinking);
                    let index = self.next_thinking_block();
                    self.chunk(
                        json!({"thinking_blocks": [{"index": index, "type": "thinking", "thinking": text, "signature": s}]}),
                        None,
                        out,
                    );
                }
            }
            StreamEvent::RedactedThinking(data) => {
                self.ensure_role(out);
                let index = self.next_thinking_block();
                self.chunk(
                    json!({"thinking_blocks": [{"index": index, "type": "redacted_thinking", "data": data}]}),
                    None,
                    out,
                );
            }
            StreamEvent::ToolStart {
                index,
                id,
                name,
                signature,
            } => {
                self.ensure_role(out);
                self.saw_tool_call = true;
                self.argless.push(index);
                // Arguments start as "" — never "{}", which the client would prefix to the real arguments.
                self.chunk(
                    json!({"tool_calls": [{"index": index, "id": smuggle_signature(&id, &signature), "type": "function",
                        "function": {"name": name, "arguments": ""}}]}),
                    None,
                    out,
                );
            }
            StreamEvent::ToolArgs { index, delta } => {
                if !delta.trim().is_empty() {
                    self.argless.retain(|&i| i != index);
                }
                if !delta.is_empty() {
                    self.chunk(
                        json!({"tool_calls": [{"index": index, "function": {"arguments": delta}}]}),
                        None,
                        out,
                    );
                }
            }
            StreamEvent::BlockStop => self.thinking.clear(),
            StreamEvent::Usage(u) => self.usage = Some(u),
            StreamEvent::Finish { reason, .. } => {
                if self.finish.is_none() {
                    self.ensure_role(out);
                    if !self.images.is_empty() {
                        let images = std::mem::take(&mut self.images);
                        self.chunk(json!({"images": images}), None, out);
                    }
                    for index in std::mem::take(&mut self.argless) {
                        self.chunk(
                            json!({"tool_calls": [{"index": index, "function": {"arguments": "{}"}}]}),
                            None,
                            out,
                        );
                    }
                    let reason = if self.saw_tool_call && reason == FinishReason::Stop {
                        FinishReason::ToolCalls
                    } else {
                        reason
                    };
                    self.finish = Some(reason);
                    self.chunk(json!({}), Some(finish_str(reason)), out);
                }
            }
            StreamEvent::Error { message, code } => self.fail(&message, &code, out),
        }
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        if self.finish.is_none() {
            self.encode(
                StreamEvent::Finish {
                    reason: FinishReason::Stop,
                    stop_sequence: None,
                },
                out,
            );
        }
        self.closed = true;
        // Without usage from the upstream there is no usage chunk: zeros would read as a free answer,
        // and OpenAI's SDKs already leave `usage` unset when the chunk does not come.
        if let (true, Some(usage)) = (self.include_usage, &self.usage) {
            write_data(
                out,
                &json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                    "choices": [], "usage": usage.to_openai_chat()}),
            );
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }

    fn fail(&mut self, message: &str, code: &str, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        self.closed = true;
        // No [DONE] after an error: the openai SDK raises APIError on this chunk.
        write_data(
            out,
            &json!({"error": {"message": message, "type": "server_error", "param": null, "code": code}}),
        );
    }
}
