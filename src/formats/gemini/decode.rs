//! Gemini stream chunks (each a whole GenerateContentResponse) → stream events (formats.md §4.1, §4.6).

use serde_json::Value;

use super::parse_finish;
use crate::formats::ir::{FinishReason, Signature, Vendor};
use crate::formats::json::*;
use crate::formats::stream::events::{Choices, Decode, StreamEvent};
use crate::formats::usage::Usage;

#[derive(Debug, Default)]
pub struct GeminiDecoder {
    started: bool,
    /// Stream-level tool counter: never the part index of a chunk (LiteLLM #16188).
    tools: usize,
    usage: Option<Usage>,
    finished: bool,
    errored: bool,
    /// `candidateCount` above 1: the first one's finish is not the stream's end.
    candidates: Choices,
}

impl GeminiDecoder {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Decode for GeminiDecoder {
    fn decode(&mut self, _event: Option<&str>, data: &str, out: &mut Vec<StreamEvent>) {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if let Some(err) = v.get("error").filter(|e| e.is_object()) {
            self.errored = true;
            out.push(StreamEvent::Error {
                message: str_at(err, "message").unwrap_or("upstream error").to_string(),
                code: str_at(err, "status").unwrap_or("UNAVAILABLE").to_string(),
            });
            return;
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Meta {
                id: get2(&v, "responseId", "response_id")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                model: get2(&v, "modelVersion", "model_version")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                created: None,
            });
        }
        // Usage before content, so an Anthropic client's message_start can carry the real prompt count.
        if let Some(u) = get2(&v, "usageMetadata", "usage_metadata").and_then(Usage::from_gemini) {
            self.usage = Some(u.clone());
            out.push(StreamEvent::Usage(u));
        }
        for (position, c) in arr_at(&v, "candidates").iter().enumerate() {
            let index = c.get("index").and_then(Value::as_u64).unwrap_or(position as u64);
            self.candidates.saw(index, finish_reason(c).is_some());
        }
        let Some(cand) = arr_at(&v, "candidates").first() else {
            let feedback = get2(&v, "promptFeedback", "prompt_feedback");
            if feedback.and_then(|f| get2(f, "blockReason", "block_reason")).is_some() {
                self.finished = true;
                // A blocked prompt has no candidates to wait for.
                self.candidates.finish_all();
                out.push(StreamEvent::Finish {
                    reason: FinishReason::ContentFilter,
                    stop_sequence: None,
                });
            }
            return;
        };
        // Every part: text and a functionCall may share a chunk.
        for p in arr_at(cand.get("content").unwrap_or(&Value::Null), "parts") {
            let signature = get2(p, "thoughtSignature", "thought_signature")
                .and_then(Value::as_str)
                .map(|s| Signature {
                    vendor: Vendor::Gemini,
                    value: s.to_string(),
                });
            if let Some(fc) = get2(p, "functionCall", "function_call") {
                let k = self.tools;
                self.tools += 1;
                out.push(StreamEvent::ToolStart {
                    index: k,
                    id: str_at(fc, "id")
                        .filter(|id| !id.is_empty())
                        .map_or_else(|| new_id("call_"), str::to_string),
                    name: str_at(fc, "name").unwrap_or_default().to_string(),
                    signature,
                });
                out.push(StreamEvent::ToolArgs {
                    index: k,
                    delta: crate::formats::json::args_text(fc.get("args")),
                });
                out.push(StreamEvent::BlockStop);
            } else if let Some(t) = str_at(p, "text") {
                // An empty `{text:""}` in the final chunk is not content.
                if t.is_empty() {
                    continue;
                }
                if p.get("thought").and_then(Value::as_bool) == Some(true) {
                    out.push(StreamEvent::Thinking(t.to_string()));
                } else {
                    out.push(StreamEvent::Text(t.to_string()));
                }
            } else if let Some(media) = super::part_media(p) {
                out.push(StreamEvent::Image(media));
            }
        }
        if let Some(fr) = finish_reason(cand) {
            self.finished = true;
            out.push(StreamEvent::Finish {
                reason: parse_finish(fr, self.tools > 0),
                stop_sequence: None,
            });
        }
    }

    fn completed(&self) -> bool {
        // Gemini has no terminator: the chunk with the last candidate's finishReason is the last
        // (with `candidateCount` above one, a stream cut after the first finished is cut).
        self.finished && self.candidates.all_finished()
    }

    fn terminated(&self) -> bool {
        self.finished && self.candidates.all_finished()
    }

    fn errored(&self) -> bool {
        self.errored
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.clone()
    }
}

/// A candidate's finish reason: a word. A `null` or empty one, as some Gemini-compatible servers
/// send on every chunk, is no finish (taken for one, the stream would end at its first chunk).
fn finish_reason(candidate: &Value) -> Option<&str> {
    get2(candidate, "finishReason", "finish_reason")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(d: &mut GeminiDecoder, chunk: &str) {
        d.decode(None, chunk, &mut Vec::new());
    }

    #[test]
    fn the_stream_ends_when_every_candidate_has_finished() {
        let mut one = GeminiDecoder::new();
        feed(&mut one, r#"{"candidates":[{"content":{"parts":[{"text":"hi"}]}}]}"#);
        assert!(!one.terminated());
        feed(
            &mut one,
            r#"{"candidates":[{"content":{"parts":[{"text":"!"}]},"finishReason":"STOP"}]}"#,
        );
        assert!(one.completed() && one.terminated());

        // `candidateCount: 2`: the first finishes while the second still streams.
        let mut two = GeminiDecoder::new();
        feed(
            &mut two,
            r#"{"candidates":[{"index":0,"content":{"parts":[{"text":"a"}]}},{"index":1,"content":{"parts":[{"text":"b"}]}}]}"#,
        );
        feed(
            &mut two,
            r#"{"candidates":[{"index":0,"finishReason":"STOP","content":{"parts":[]}}]}"#,
        );
        assert!(!two.completed() && !two.terminated());
        feed(
            &mut two,
            r#"{"candidates":[{"index":1,"finishReason":"STOP","content":{"parts":[]}}]}"#,
        );
        assert!(two.completed() && two.terminated());
    }

    /// A `null` or empty finish reason on every chunk (Gemini-compatible servers) ends nothing.
    #[test]
    fn an_empty_finish_reason_is_no_finish() {
        let mut d = GeminiDecoder::new();
        let mut out = Vec::new();
        for fr in ["null", "\"\""] {
            let chunk =
                format!(r#"{{"candidates":[{{"content":{{"parts":[{{"text":"hi"}}]}},"finishReason":{fr}}}]}}"#);
            d.decode(None, &chunk, &mut out);
            assert!(!d.completed() && !d.terminated(), "{fr}");
        }
        assert!(!out.iter().any(|e| matches!(e, StreamEvent::Finish { .. })), "{out:?}");
        feed(
            &mut d,
            r#"{"candidates":[{"content":{"parts":[]},"finishReason":"STOP"}]}"#,
        );
        assert!(d.completed());
    }
}
