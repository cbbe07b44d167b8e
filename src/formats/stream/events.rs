//! The format-neutral stream events decoders produce and encoders consume (formats.md §0).

use crate::formats::ir::{FinishReason, Media, Signature};
use crate::formats::usage::Usage;

/// One step of a streamed response. Tool calls are identified by a dense 0-based `index` that counts only tool
/// calls, assigned by the decoder (never a block index or output index: §4.2, §4.5).
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The upstream's envelope: its first event. Fields the upstream does not have are `None`.
    Meta {
        id: Option<String>,
        model: Option<String>,
        created: Option<u64>,
    },
    Text(String),
    /// An OpenAI model's refusal (see `Block::Refusal`).
    Refusal(String),
    Thinking(String),
    /// An image the model made (Gemini's image models), whole: upstreams send one in one event.
    Image(Media),
    /// The signature of the thinking block in progress.
    Signature(Signature),
    RedactedThinking(String),
    ToolStart {
        index: usize,
        id: String,
        name: String,
        /// Gemini's thoughtSignature on the call.
        signature: Option<Signature>,
    },
    ToolArgs {
        index: usize,
        delta: String,
    },
    /// The upstream closed the block in progress (Anthropic `content_block_stop`, Responses `output_item.done`).
    BlockStop,
    /// The usage so far, complete (decoders merge partial reports).
    Usage(Usage),
    Finish {
        reason: FinishReason,
        stop_sequence: Option<String>,
    },
    /// An error the upstream reported in the stream.
    Error {
        message: String,
        code: String,
    },
}

impl StreamEvent {
    /// Whether the event is some of the answer itself (text, reasoning, a refusal, an image, a
    /// tool call), not its envelope, usage or end.
    pub fn is_content(&self) -> bool {
        match self {
            StreamEvent::Text(t) | StreamEvent::Refusal(t) | StreamEvent::Thinking(t) => !t.is_empty(),
            StreamEvent::Image(_) | StreamEvent::RedactedThinking(_) | StreamEvent::ToolStart { .. } => true,
            _ => false,
        }
    }
}

/// Upstream stream → events. `event` is the SSE `event:` name when there was one; `data` the payload.
/// The choices (candidates) of a stream seen and those finished, by index (bits; an index above 63
/// counts as 63): with several choices, the first one's finish is not the stream's end.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Choices {
    seen: u64,
    done: u64,
}

impl Choices {
    pub(crate) fn saw(&mut self, index: u64, finished: bool) {
        let bit = 1u64 << index.min(63);
        self.seen |= bit;
        if finished {
            self.done |= bit;
        }
    }

    /// Every choice seen is over (a blocked prompt, say).
    pub(crate) fn finish_all(&mut self) {
        self.done = self.seen;
    }

    pub(crate) fn all_finished(&self) -> bool {
        self.done == self.seen
    }
}

pub(crate) trait Decode: Send + Sync {
    fn decode(&mut self, event: Option<&str>, data: &str, out: &mut Vec<StreamEvent>);
    /// The upstream's own terminator or finish was seen.
    fn completed(&self) -> bool;
    /// The upstream's last event was seen, after which only the end of its body may come (`[DONE]`,
    /// `message_stop`; a finish alone is not: a usage chunk, or the other choices of `n > 1`, may
    /// follow it).
    fn terminated(&self) -> bool {
        self.completed()
    }
    /// The id a Responses stream gave its response (`response.created`).
    fn response_id(&self) -> Option<&str> {
        None
    }
    /// The upstream reported an error in the stream.
    fn errored(&self) -> bool;
    fn usage(&self) -> Option<Usage>;
}

/// Events → client stream bytes. Stateful per request.
pub(crate) trait Encode: Send + Sync {
    fn encode(&mut self, event: StreamEvent, out: &mut Vec<u8>);
    /// The upstream finished cleanly: the client-format ending.
    fn end(&mut self, out: &mut Vec<u8>);
    /// The in-format error event; nothing is written after it.
    fn fail(&mut self, message: &str, code: &str, out: &mut Vec<u8>);
    /// The upstream sent a keep-alive (Anthropic `ping`): one the client's format ignores, so idle
    /// connections between the client and the gateway stay open (formats.md §4.8). An SSE comment
    /// unless the format has its own.
    fn keepalive(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(KEEPALIVE);
    }
}

/// An SSE comment: every SSE client skips it.
pub(crate) const KEEPALIVE: &[u8] = b": ping\n\n";

/// Appends `data: <json>\n\n`.
pub(crate) fn write_data(out: &mut Vec<u8>, json: &serde_json::Value) {
    out.extend_from_slice(b"data: ");
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, json);
    out.extend_from_slice(b"\n\n");
}

/// Appends `event: <name>\ndata: <json>\n\n` (Anthropic and Responses clients need the `event:` line).
pub(crate) fn write_event(out: &mut Vec<u8>, name: &str, json: &serde_json::Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
    write_data(out, json);
}
