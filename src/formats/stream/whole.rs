//! A whole answer told as a stream: some upstreams ignore `stream: true` (OpenAI-compatible servers,
//! older Ollama and vLLM builds with tools) and answer with one JSON object. A client that asked for
//! a stream reads only events (the OpenAI SDK would yield nothing from JSON), so the answer is
//! replayed as the events of the client's own format, ending as a stream ends.

use super::encoder;
use super::events::StreamEvent;
use super::StreamOptions;
use crate::formats::convert::parse_response;
use crate::formats::ir::{Block, IrResponse};
use crate::formats::usage::Usage;
use crate::formats::wire::WireFormat;

/// A whole answer written as the client's stream.
pub struct Replayed {
    pub out: Vec<u8>,
    pub usage: Option<Usage>,
    /// Whether it carries any of the answer itself (text, reasoning, a refusal, an image, a tool
    /// call): what a stream's time to first token waits for.
    pub content: bool,
}

/// The client's stream for a whole answer of format `from`, or for why there is none (too large to
/// keep, cut off). An answer that is missing or cannot be read ends the stream with an in-format
/// error event.
pub fn answer_as_stream(
    from: WireFormat,
    to: WireFormat,
    answer: Result<&[u8], &str>,
    opts: &StreamOptions,
) -> Replayed {
    let mut encoder = encoder(to, opts);
    let mut out = Vec::new();
    let parsed = answer
        .map_err(str::to_string)
        .and_then(|body| parse_response(from, body).map_err(|e| format!("The upstream answer could not be read: {e}")));
    match parsed {
        Ok(mut ir) => {
            if let Some(names) = &opts.tool_names {
                names.restore(&mut ir);
            }
            let mut content = false;
            for event in events_of(&ir) {
                content |= event.is_content();
                encoder.encode(event, &mut out);
            }
            encoder.end(&mut out);
            Replayed {
                out,
                usage: ir.usage,
                content,
            }
        }
        Err(message) => {
            encoder.fail(&message, "stream_interrupted", &mut out);
            Replayed {
                out,
                usage: None,
                content: false,
            }
        }
    }
}

/// The events a stream of this answer would have carried, in the order decoders emit them.
fn events_of(ir: &IrResponse) -> Vec<StreamEvent> {
    let mut events = vec![StreamEvent::Meta {
        id: ir.id.clone(),
        model: ir.model.clone(),
        created: ir.created,
    }];
    // Known from the start, as in an Anthropic `message_start`.
    if let Some(u) = &ir.usage {
        events.push(StreamEvent::Usage(u.clone()));
    }
    let mut tools = 0;
    for block in &ir.content {
        match block {
            Block::Text(t) if !t.text.is_empty() => events.push(StreamEvent::Text(t.text.clone())),
            Block::Refusal(r) if !r.is_empty() => events.push(StreamEvent::Refusal(r.clone())),
            Block::Thinking { text, signature } => {
                events.push(StreamEvent::Thinking(text.clone()));
                if let Some(s) = signature {
                    events.push(StreamEvent::Signature(s.clone()));
                }
            }
            Block::RedactedThinking { data } => events.push(StreamEvent::RedactedThinking(data.clone())),
            Block::Image(m) => events.push(StreamEvent::Image(m.clone())),
            Block::ToolCall(call) => {
                events.push(StreamEvent::ToolStart {
                    index: tools,
                    id: call.id.clone(),
                    name: call.name.clone(),
                    signature: call.signature.clone(),
                });
                events.push(StreamEvent::ToolArgs {
                    index: tools,
                    delta: call.arguments.clone(),
                });
                tools += 1;
            }
            _ => continue,
        }
        events.push(StreamEvent::BlockStop);
    }
    events.push(StreamEvent::Finish {
        reason: ir.effective_finish(),
        stop_sequence: ir.stop_sequence.clone(),
    });
    events
}
