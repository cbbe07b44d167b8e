//! OpenAI Responses events → stream events (formats.md §4.1, §4.5).

use serde_json::Value;

use crate::formats::ir::FinishReason;
use crate::formats::json::*;
use crate::formats::stream::events::{Decode, StreamEvent};
use crate::formats::usage::Usage;

#[derive(Debug, Default)]
pub struct ResponsesDecoder {
    started: bool,
    /// The function_call items, by dense tool index (own counter over function_call items, never
    /// output_index).
    tools: Vec<ToolItem>,
    /// How much of each text part has gone out, by part (`Part`): a `.done` event or a finished
    /// item brings what no delta did (servers that send text or arguments only whole).
    texts: Vec<(SentPart, usize)>,
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

    /// The call an event is about: by its item's id, or by its output index when the item had
    /// no id.
    fn tool_of(&self, v: &Value) -> Option<usize> {
        self.tool_at(str_at(v, "item_id"), u64_at(v, "output_index"))
    }

    fn tool_at(&self, id: Option<&str>, at: Option<u64>) -> Option<usize> {
        let id = id.filter(|id| !id.is_empty());
        self.tools.iter().position(|t| match id {
            Some(id) => t.id == id,
            None => at.is_some() && t.output_index == at,
        })
    }

    /// Sends the arguments of call `k` that have not gone out yet, out of them whole.
    fn tool_args_whole(&mut self, k: usize, whole: &str, out: &mut Vec<StreamEvent>) {
        let sent = self.tools[k].sent;
        if let Some(rest) = whole.get(sent..).filter(|r| !r.is_empty()) {
            self.tools[k].sent = whole.len();
            out.push(StreamEvent::ToolArgs {
                index: k,
                delta: rest.to_string(),
            });
        }
    }

    /// Sends a text (or refusal) part's delta, counted against the part.
    fn text(&mut self, part: Part<'_>, delta: &str, out: &mut Vec<StreamEvent>) {
        if delta.is_empty() {
            return;
        }
        match self.texts.iter_mut().find(|(p, _)| p.is(&part)) {
            Some((_, sent)) => *sent += delta.len(),
            None => self.texts.push((part.owned(), delta.len())),
        }
        out.push(match part.refusal {
            true => StreamEvent::Refusal(delta.to_string()),
            false => StreamEvent::Text(delta.to_string()),
        });
    }

    /// Sends what of a part's whole text has not gone out yet.
    fn text_whole(&mut self, part: Part<'_>, whole: &str, out: &mut Vec<StreamEvent>) {
        let sent = self.texts.iter().find(|(p, _)| p.is(&part)).map_or(0, |(_, n)| *n);
        if let Some(rest) = whole.get(sent..) {
            self.text(part, rest, out);
        }
    }
}

/// A function_call item being streamed.
#[derive(Debug)]
struct ToolItem {
    id: String,
    output_index: Option<u64>,
    /// Bytes of its arguments gone out.
    sent: usize,
}

/// A text part of the answer, as an event names it: its item (by id, or output index when it has
/// none) and the part's index in it. Borrowed from the event: one is looked up per delta.
#[derive(Debug, Clone, Copy)]
struct Part<'a> {
    item: Result<&'a str, u64>,
    content_index: u64,
    /// A `refusal` part, not `output_text`.
    refusal: bool,
}

impl<'a> Part<'a> {
    /// The part a text event is about.
    fn of(v: &'a Value) -> Part<'a> {
        let (id, at) = (str_at(v, "item_id"), u64_at(v, "output_index"));
        Part::at(id, at, u64_at(v, "content_index").unwrap_or(0))
    }

    fn at(item_id: Option<&'a str>, output_index: Option<u64>, content_index: u64) -> Part<'a> {
        Part {
            item: item_id.filter(|id| !id.is_empty()).ok_or(output_index.unwrap_or(0)),
            content_index,
            refusal: false,
        }
    }

    fn refusing(self, refusal: bool) -> Part<'a> {
        Part { refusal, ..self }
    }

    fn owned(&self) -> SentPart {
        SentPart {
            item: self.item.map(str::to_string),
            content_index: self.content_index,
            refusal: self.refusal,
        }
    }
}

/// A part some of whose text has gone out.
#[derive(Debug)]
struct SentPart {
    item: Result<String, u64>,
    content_index: u64,
    refusal: bool,
}

impl SentPart {
    fn is(&self, p: &Part<'_>) -> bool {
        self.item.as_deref().map_err(|at| *at) == p.item
            && self.content_index == p.content_index
            && self.refusal == p.refusal
    }
}

impl Decode for ResponsesDecoder {
    fn decode(&mut self, _event: Option<&str>, data: &str, out: &mut Vec<StreamEvent>) {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        let r = v.get("response").unwrap_or(&Value::Null);
        let kind = str_at(&v, "type").unwrap_or_default();
        match kind {
            "response.created" | "response.in_progress" => self.meta(r, out),
            "response.output_item.added" => {
                self.meta(r, out);
                let item = v.get("item").unwrap_or(&Value::Null);
                if str_at(item, "type") == Some("function_call") {
                    let k = self.tools.len();
                    self.tools.push(ToolItem {
                        id: str_at(item, "id").unwrap_or_default().to_string(),
                        output_index: u64_at(&v, "output_index"),
                        sent: 0,
                    });
                    out.push(StreamEvent::ToolStart {
                        index: k,
                        id: str_at(item, "call_id").map_or_else(|| new_id("call_"), str::to_string),
                        name: str_at(item, "name").unwrap_or_default().to_string(),
                        signature: None,
                    });
                    if let Some(a) = str_at(item, "arguments") {
                        self.tool_args_whole(k, a, out);
                    }
                }
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                let part = Part::of(&v).refusing(kind == "response.refusal.delta");
                self.text(part, str_at(&v, "delta").unwrap_or_default(), out);
            }
            // The part whole: what no delta brought (gpt-5.3-codex-spark sends a call's arguments
            // only here; xAI a message's text only in its finished item).
            "response.output_text.done" => {
                let part = Part::of(&v);
                self.text_whole(part, str_at(&v, "text").unwrap_or_default(), out);
            }
            "response.refusal.done" => {
                let part = Part::of(&v).refusing(true);
                self.text_whole(part, str_at(&v, "refusal").unwrap_or_default(), out);
            }
            "response.function_call_arguments.done" => {
                if let (Some(k), Some(a)) = (self.tool_of(&v), str_at(&v, "arguments")) {
                    self.tool_args_whole(k, a, out);
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
                    self.tools[k].sent += d.len();
                    out.push(StreamEvent::ToolArgs {
                        index: k,
                        delta: d.to_string(),
                    });
                }
            }
            "response.output_item.done" => {
                let item = v.get("item").unwrap_or(&Value::Null);
                let (id, at) = (str_at(item, "id"), u64_at(&v, "output_index"));
                match str_at(item, "type") {
                    Some("function_call") => {
                        if let (Some(k), Some(a)) = (self.tool_at(id, at), str_at(item, "arguments")) {
                            self.tool_args_whole(k, a, out);
                        }
                    }
                    Some("message") => {
                        for (i, c) in arr_at(item, "content").iter().enumerate() {
                            let (whole, refusal) = match str_at(c, "type") {
                                Some("output_text") => (str_at(c, "text"), false),
                                Some("refusal") => (str_at(c, "refusal"), true),
                                _ => (None, false),
                            };
                            if let Some(whole) = whole {
                                self.text_whole(Part::at(id, at, i as u64).refusing(refusal), whole, out);
                            }
                        }
                    }
                    Some("image_generation_call") => out.extend(super::item_image(item).map(StreamEvent::Image)),
                    _ => {}
                }
                out.push(StreamEvent::BlockStop);
            }
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
