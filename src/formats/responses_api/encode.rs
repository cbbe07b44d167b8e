//! Stream events → OpenAI Responses events (formats.md §4.5): `sequence_number` strictly increasing from 0,
//! items opened lazily and closed in order, `response.completed` carrying the full response.

use serde_json::{json, Value};

use super::response::{reasoning_item, redacted_item, status_of};
use crate::formats::ir::{smuggle_signature, FinishReason, Media, Signature};
use crate::formats::json::{new_id, now_secs};
use crate::formats::stream::events::{write_event, Encode, StreamEvent};
use crate::formats::usage::Usage;

/// The item in progress.
enum OpenItem {
    Message {
        id: String,
        output_index: usize,
        text: String,
        /// A `refusal` part, not `output_text`.
        refusal: bool,
    },
    Reasoning {
        id: String,
        output_index: usize,
        text: String,
        signature: Option<Signature>,
    },
    Tool {
        tool: usize,
    },
}

struct ToolItem {
    item_id: String,
    output_index: usize,
    call_id: String,
    name: String,
    arguments: String,
}

impl ToolItem {
    fn item(&self, status: &str) -> Value {
        json!({"type": "function_call", "id": self.item_id, "call_id": self.call_id, "name": self.name,
            "arguments": self.arguments, "status": status})
    }
}

pub struct ResponsesEncoder {
    model: String,
    id: String,
    created: u64,
    seq: u64,
    started: bool,
    /// Finished items, in output order (for `response.completed`).
    output: Vec<Value>,
    open: Option<OpenItem>,
    tools: Vec<ToolItem>,
    /// Function calls that started while another was streaming (positions in `tools`): announced
    /// whole once it closes, because an OpenAI-compatible upstream may still interleave arguments
    /// of the streaming one (formats.md §4.3).
    held_tools: Vec<usize>,
    usage: Option<Usage>,
    finish: Option<FinishReason>,
    closed: bool,
}

impl ResponsesEncoder {
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_string(),
            id: new_id("resp_"),
            created: now_secs(),
            seq: 0,
            started: false,
            output: Vec::new(),
            open: None,
            tools: Vec::new(),
            held_tools: Vec::new(),
            usage: None,
            finish: None,
            closed: false,
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, name: &str, mut payload: Value) {
        payload["type"] = name.into();
        payload["sequence_number"] = self.seq.into();
        self.seq += 1;
        write_event(out, name, &payload);
    }

    fn response(&self, status: &str) -> Value {
        json!({
            "id": self.id, "object": "response", "created_at": self.created, "status": status, "error": null,
            "incomplete_details": null, "model": self.model, "output": self.output, "parallel_tool_calls": true,
            "tool_choice": "auto", "tools": [], "usage": self.usage.as_ref().map(Usage::to_responses),
        })
    }

    fn ensure_started(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            let r = self.response("in_progress");
            self.emit(out, "response.created", json!({"response": r}));
            self.emit(out, "response.in_progress", json!({"response": r}));
        }
    }

    fn next_output_index(&self) -> usize {
        self.output.len() + usize::from(self.open.is_some())
    }

    /// Closes the item in progress; after a function call, the calls held behind it follow whole.
    /// Opens a reasoning item unless one is open.
    fn open_reasoning(&mut self, out: &mut Vec<u8>) {
        self.ensure_started(out);
        if matches!(self.open, Some(OpenItem::Reasoning { .. })) {
            return;
        }
        self.close_item(out);
        let id = new_id(super::GATEWAY_REASONING_ID);
        let output_index = self.next_output_index();
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": output_index, "item": {"type": "reasoning", "id": id, "summary": []}}),
        );
        self.emit(
            out,
            "response.reasoning_summary_part.added",
            json!({"item_id": id, "output_index": output_index, "summary_index": 0,
                "part": {"type": "summary_text", "text": ""}}),
        );
        self.open = Some(OpenItem::Reasoning {
            id,
            output_index,
            text: String::new(),
            signature: None,
        });
    }

    fn close_item(&mut self, out: &mut Vec<u8>) {
        self.close_open_item(out);
        for tool in std::mem::take(&mut self.held_tools) {
            let output_index = self.next_output_index();
            let Some(t) = self.tools.get_mut(tool) else { continue };
            t.output_index = output_index;
            let mut added = t.item("in_progress");
            added["arguments"] = "".into();
            let (item_id, arguments) = (t.item_id.clone(), t.arguments.clone());
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": output_index, "item": added}),
            );
            if !arguments.is_empty() {
                let payload = json!({"item_id": item_id, "output_index": output_index, "delta": arguments});
                self.emit(out, "response.function_call_arguments.delta", payload);
            }
            self.open = Some(OpenItem::Tool { tool });
            self.close_open_item(out);
        }
    }

    /// Text (or a refusal) into the open message, opening one for it (a message holds one part:
    /// text and a refusal each have their own).
    fn message_delta(&mut self, t: String, refusal: bool, out: &mut Vec<u8>) {
        self.ensure_started(out);
        if !matches!(self.open, Some(OpenItem::Message { refusal: r, .. }) if r == refusal) {
            self.close_item(out);
            let id = new_id("msg_");
            let output_index = self.next_output_index();
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": output_index, "item": {"type": "message", "id": id, "status": "in_progress",
                    "role": "assistant", "content": []}}),
            );
            let part = if refusal {
                json!({"type": "refusal", "refusal": ""})
            } else {
                json!({"type": "output_text", "text": "", "annotations": []})
            };
            self.emit(
                out,
                "response.content_part.added",
                json!({"item_id": id, "output_index": output_index, "content_index": 0, "part": part}),
            );
            self.open = Some(OpenItem::Message {
                id,
                output_index,
                text: String::new(),
                refusal,
            });
        }
        if let Some(OpenItem::Message {
            id, output_index, text, ..
        }) = &mut self.open
        {
            text.push_str(&t);
            let (event, payload) = if refusal {
                let payload = json!({"item_id": id, "output_index": output_index, "content_index": 0, "delta": t});
                ("response.refusal.delta", payload)
            } else {
                let payload = json!({"item_id": id, "output_index": output_index, "content_index": 0, "delta": t, "logprobs": []});
                ("response.output_text.delta", payload)
            };
            self.emit(out, event, payload);
        }
    }

    /// An image the model made: an `image_generation_call` item, whole (one given by URL, its
    /// link in a message of its own).
    fn image(&mut self, m: Media, out: &mut Vec<u8>) {
        self.ensure_started(out);
        self.close_item(out);
        let (media_type, data) = match m {
            Media::Base64 { media_type, data } => (media_type, data),
            Media::Url { url, .. } => {
                self.message_delta(url, false, out);
                return self.close_item(out);
            }
        };
        let id = new_id(super::GATEWAY_IMAGE_ID);
        let output_index = self.next_output_index();
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": output_index,
                "item": {"type": "image_generation_call", "id": id, "status": "in_progress", "result": null}}),
        );
        self.emit(
            out,
            "response.image_generation_call.completed",
            json!({"output_index": output_index, "item_id": id}),
        );
        let item = super::image_item(&id, &media_type, &data);
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": output_index, "item": item}),
        );
        self.output.push(item);
    }

    fn close_open_item(&mut self, out: &mut Vec<u8>) {
        match self.open.take() {
            None => {}
            Some(OpenItem::Message {
                id,
                output_index,
                text,
                refusal,
            }) => {
                let part = if refusal {
                    self.emit(
                        out,
                        "response.refusal.done",
                        json!({"item_id": id, "output_index": output_index, "content_index": 0, "refusal": text}),
                    );
                    json!({"type": "refusal", "refusal": text})
                } else {
                    self.emit(
                        out,
                        "response.output_text.done",
                        json!({"item_id": id, "output_index": output_index, "content_index": 0, "text": text, "logprobs": []}),
                    );
                    json!({"type": "output_text", "text": text, "annotations": []})
                };
                self.emit(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": output_index, "content_index": 0, "part": part}),
                );
                let item =
                    json!({"type": "message", "id": id, "status": "completed", "role": "assistant", "content": [part]});
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": output_index, "item": item}),
                );
                self.output.push(item);
            }
            Some(OpenItem::Reasoning {
                id,
                output_index,
                text,
                signature,
            }) => {
                let part = json!({"type": "summary_text", "text": text});
                self.emit(
                    out,
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": output_index, "summary_index": 0, "text": text}),
                );
                self.emit(
                    out,
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id, "output_index": output_index, "summary_index": 0, "part": part}),
                );
                let item = reasoning_item(&id, &text, &signature);
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": output_index, "item": item}),
                );
                self.output.push(item);
            }
            Some(OpenItem::Tool { tool }) => {
                let Some(t) = self.tools.get_mut(tool) else { return };
                // A call without arguments (Claude streams none for a tool without parameters)
                // still carries an object, as OpenAI's do: clients parse the arguments as JSON.
                let argless = t.arguments.trim().is_empty();
                if argless {
                    t.arguments = "{}".into();
                }
                let (item_id, output_index, arguments, item) = (
                    t.item_id.clone(),
                    t.output_index,
                    t.arguments.clone(),
                    t.item("completed"),
                );
                if argless {
                    let payload = json!({"item_id": item_id, "output_index": output_index, "delta": arguments});
                    self.emit(out, "response.function_call_arguments.delta", payload);
                }
                self.emit(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": item_id, "output_index": output_index, "arguments": arguments}),
                );
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": output_index, "item": item}),
                );
                self.output.push(item);
            }
        }
    }
}

impl Encode for ResponsesEncoder {
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
                self.ensure_started(out);
            }
            StreamEvent::Usage(u) => self.usage = Some(u),
            StreamEvent::Text(t) if !t.is_empty() => self.message_delta(t, false, out),
            StreamEvent::Refusal(t) if !t.is_empty() => self.message_delta(t, true, out),
            StreamEvent::Image(m) => self.image(m, out),
            StreamEvent::Thinking(t) if !t.is_empty() => {
                self.open_reasoning(out);
                if let Some(OpenItem::Reasoning {
                    id, output_index, text, ..
                }) = &mut self.open
                {
                    text.push_str(&t);
                    let payload = json!({"item_id": id, "output_index": output_index, "summary_index": 0, "delta": t});
                    self.emit(out, "response.reasoning_summary_text.delta", payload);
                }
            }
            StreamEvent::Signature(sig) => {
                // Signed thinking whose text was empty (Claude's omitted thinking) is still an
                // item: Claude wants the signed block back.
                self.open_reasoning(out);
                if let Some(OpenItem::Reasoning { signature, .. }) = &mut self.open {
                    *signature = Some(sig);
                }
            }
            StreamEvent::ToolStart {
                index,
                id,
                name,
                signature,
            } => {
                self.ensure_started(out);
                if matches!(self.open, Some(OpenItem::Tool { .. })) && index == self.tools.len() {
                    // Another call is streaming and may still get arguments: this one waits whole.
                    self.tools.push(ToolItem {
                        item_id: new_id("fc_"),
                        output_index: 0,
                        call_id: smuggle_signature(&id, &signature),
                        name,
                        arguments: String::new(),
                    });
                    self.held_tools.push(index);
                    return;
                }
                self.close_item(out);
                let output_index = self.next_output_index();
                let tool = ToolItem {
                    item_id: new_id("fc_"),
                    output_index,
                    call_id: smuggle_signature(&id, &signature),
                    name,
                    arguments: String::new(),
                };
                let item = tool.item("in_progress");
                self.emit(
                    out,
                    "response.output_item.added",
                    json!({"output_index": output_index, "item": item}),
                );
                if index == self.tools.len() {
                    self.tools.push(tool);
                }
                self.open = Some(OpenItem::Tool {
                    tool: self.tools.len().saturating_sub(1),
                });
            }
            StreamEvent::ToolArgs { index, delta } if !delta.is_empty() => {
                let held = self.held_tools.contains(&index);
                if let Some(t) = self.tools.get_mut(index) {
                    t.arguments.push_str(&delta);
                    if held {
                        return;
                    }
                    let payload = json!({"item_id": t.item_id, "output_index": t.output_index, "delta": delta});
                    self.emit(out, "response.function_call_arguments.delta", payload);
                }
            }
            StreamEvent::BlockStop => self.close_item(out),
            StreamEvent::Finish { reason, .. } => {
                self.ensure_started(out);
                self.close_item(out);
                self.finish.get_or_insert(reason);
            }
            StreamEvent::RedactedThinking(data) => {
                // Opaque, with nothing to stream: one whole reasoning item.
                self.ensure_started(out);
                self.close_item(out);
                let output_index = self.next_output_index();
                let item = redacted_item(&new_id(super::GATEWAY_REASONING_ID), &data);
                self.emit(
                    out,
                    "response.output_item.added",
                    json!({"output_index": output_index, "item": item}),
                );
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": output_index, "item": item}),
                );
                self.output.push(item);
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
        self.close_item(out);
        self.closed = true;
        let (status, incomplete) = status_of(self.finish.unwrap_or(FinishReason::Stop));
        let mut r = self.response(status);
        r["incomplete_details"] = incomplete;
        // Zeros rather than null when the upstream reported none, as in a whole answer: the
        // Vercel AI SDK reads `usage.input_tokens` of the finished response unchecked.
        r["usage"] = self.usage.clone().unwrap_or_default().to_responses();
        let name = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit(out, name, json!({ "response": r }));
    }

    fn fail(&mut self, message: &str, code: &str, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        self.ensure_started(out);
        self.closed = true;
        let mut r = self.response("failed");
        r["error"] = json!({"code": code, "message": message});
        self.emit(out, "response.failed", json!({ "response": r }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::ir::{FinishReason, Signature, Vendor};
    use crate::formats::stream::events::Encode;

    /// Claude's thinking with its text left out (only the signature streams) is still a reasoning
    /// item, carrying the signature Claude wants back.
    #[test]
    fn a_signature_without_text_is_a_reasoning_item() {
        let mut enc = ResponsesEncoder::new("m");
        let mut out = Vec::new();
        for event in [
            StreamEvent::Signature(Signature {
                vendor: Vendor::Anthropic,
                value: "EqQB".into(),
            }),
            StreamEvent::Text("hi".into()),
            StreamEvent::Finish {
                reason: FinishReason::Stop,
                stop_sequence: None,
            },
        ] {
            enc.encode(event, &mut out);
        }
        enc.end(&mut out);
        let text = String::from_utf8(out).unwrap();
        let done = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find(|v| v["type"] == "response.completed")
            .expect("response.completed");
        let output = done["response"]["output"].as_array().unwrap();
        assert_eq!(output[0]["type"], "reasoning", "{done}");
        assert_eq!(output[0]["encrypted_content"], "anthropic-thinking:EqQB");
        assert_eq!(output[1]["type"], "message");
        // No usage reported: zeros, not null (the Vercel AI SDK reads it unchecked).
        assert_eq!(done["response"]["usage"]["input_tokens"], 0, "{done}");
        assert_eq!(done["response"]["usage"]["output_tokens"], 0, "{done}");
    }
}
