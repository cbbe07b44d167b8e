//! Stream events → Gemini chunks (formats.md §4.4): one GenerateContentResponse per text delta, function calls
//! buffered until whole (Gemini clients expect `args` objects), the final chunk with finishReason and usage.
//! Framed as SSE (`data: ` with the space, `\r\n\r\n`) or, for `:streamGenerateContent` without `alt=sse`, as a
//! JSON array.

use serde_json::{json, Value};

use super::finish_str;
use crate::formats::error_map::gemini_stream_error;
use crate::formats::ir::{FinishReason, Signature, Vendor};
use crate::formats::json::{args_object, new_id};
use crate::formats::stream::events::{Encode, StreamEvent};
use crate::formats::usage::Usage;

struct PendingCall {
    id: String,
    name: String,
    args: String,
    signature: Option<Signature>,
}

pub struct GeminiEncoder {
    model: String,
    id: String,
    array: bool,
    frames: usize,
    calls: Vec<PendingCall>,
    usage: Option<Usage>,
    finish: Option<FinishReason>,
    closed: bool,
}

impl GeminiEncoder {
    pub fn new(model: &str, array: bool) -> Self {
        Self {
            model: model.to_string(),
            id: new_id(""),
            array,
            frames: 0,
            calls: Vec::new(),
            usage: None,
            finish: None,
            closed: false,
        }
    }

    fn frame(&mut self, out: &mut Vec<u8>, v: &Value) {
        if self.array {
            out.extend_from_slice(if self.frames == 0 { b"[" } else { b",\r\n" });
            let _ = serde_json::to_writer(&mut *out, v);
        } else {
            out.extend_from_slice(b"data: ");
            let _ = serde_json::to_writer(&mut *out, v);
            out.extend_from_slice(b"\r\n\r\n");
        }
        self.frames += 1;
    }

    fn close_array(&mut self, out: &mut Vec<u8>) {
        if self.array {
            out.extend_from_slice(if self.frames == 0 { b"[]" } else { b"]" });
        }
    }

    fn chunk(&mut self, parts: Vec<Value>, out: &mut Vec<u8>) {
        let v = json!({"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}],
            "modelVersion": self.model, "responseId": self.id});
        self.frame(out, &v);
    }
}

impl Encode for GeminiEncoder {
    /// Gemini's clients read every line of the stream as data (and a JSON array has no room for
    /// comments): nothing is sent.
    fn keepalive(&mut self, _out: &mut Vec<u8>) {}

    fn encode(&mut self, event: StreamEvent, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        match event {
            StreamEvent::Meta { id: Some(id), .. } => self.id = id,
            StreamEvent::Usage(u) => self.usage = Some(u),
            StreamEvent::Text(t) | StreamEvent::Refusal(t) if !t.is_empty() => {
                self.chunk(vec![json!({"text": t})], out)
            }
            StreamEvent::Thinking(t) if !t.is_empty() => self.chunk(vec![json!({"text": t, "thought": true})], out),
            StreamEvent::Image(media) => self.chunk(vec![super::media_part(&media)], out),
            StreamEvent::ToolStart {
                index,
                id,
                name,
                signature,
            } if index == self.calls.len() => self.calls.push(PendingCall {
                id,
                name,
                args: String::new(),
                signature,
            }),
            StreamEvent::ToolArgs { index, delta } => {
                if let Some(c) = self.calls.get_mut(index) {
                    c.args.push_str(&delta);
                }
            }
            StreamEvent::Finish { reason, .. } => {
                self.finish.get_or_insert(reason);
            }
            StreamEvent::Error { message, code } => self.fail(&message, &code, out),
            _ => {}
        }
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        self.closed = true;
        let mut parts: Vec<Value> = self
            .calls
            .drain(..)
            .map(|c| {
                let mut p = json!({"functionCall": {"id": c.id, "name": c.name, "args": args_object(&c.args)}});
                if let Some(sig) = Signature::for_vendor(&c.signature, Vendor::Gemini) {
                    p["thoughtSignature"] = sig.into();
                }
                p
            })
            .collect();
        if parts.is_empty() {
            parts.push(json!({"text": ""}));
        }
        let finish = self.finish.unwrap_or(FinishReason::Stop);
        let mut v = json!({"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish_str(finish), "index": 0}],
            "modelVersion": self.model, "responseId": self.id});
        if let Some(u) = &self.usage {
            v["usageMetadata"] = u.to_gemini();
        }
        self.frame(out, &v);
        self.close_array(out);
    }

    fn fail(&mut self, message: &str, code: &str, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        self.closed = true;
        let v = gemini_stream_error(message, code);
        self.frame(out, &v);
        self.close_array(out);
    }
}
