//! Tool names the upstream would refuse, renamed for it and restored in its answer (formats.md §2.1).
//!
//! OpenAI (Chat and Responses) and Anthropic take names of 1–64 characters from `[a-zA-Z0-9_-]`;
//! Gemini takes 1–64 characters from `[a-zA-Z0-9_.:-]` starting with a letter or `_`. Other clients are
//! laxer (MCP tools often carry dots or long prefixes), and an upstream refuses the whole request over
//! one such name. A name the upstream would refuse is sent as a valid one (its valid characters, cut
//! to fit, and a hash of the original so two names never meet), and every tool call in the answer is
//! given its original name back, so the client never sees the difference.

use std::collections::HashMap;

use super::ir::{Block, IrRequest, IrResponse, ToolChoice};
use super::WireFormat;

const MAX_LEN: usize = 64;
/// Room kept for `_` and eight hex digits of the hash.
const KEPT_LEN: usize = MAX_LEN - 9;

/// The renames made for one request: upstream name → the client's name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolNames {
    to_client: HashMap<String, String>,
}

impl ToolNames {
    /// Renames, in `ir`, every tool name `to` would refuse (declarations, the forced choice, and the
    /// calls in the conversation so far). `None` when every name is valid as it is.
    pub fn for_request(to: WireFormat, ir: &mut IrRequest) -> Option<ToolNames> {
        let mut names = ToolNames::default();
        let mut rename = |name: &mut String| {
            if !valid(to, name) {
                let upstream = upstream_name(to, name);
                names
                    .to_client
                    .insert(upstream.clone(), std::mem::replace(name, upstream));
            }
        };
        for tool in &mut ir.tools {
            rename(&mut tool.name);
        }
        if let Some(ToolChoice::Tool(name)) = &mut ir.tool_choice {
            rename(name);
        }
        for message in &mut ir.messages {
            for block in &mut message.content {
                if let Block::ToolCall(call) = block {
                    rename(&mut call.name);
                }
            }
        }
        (!names.to_client.is_empty()).then_some(names)
    }

    /// The client's name for a tool the upstream called `name`, or `None` if it was not renamed.
    pub fn client_name(&self, name: &str) -> Option<&str> {
        self.to_client.get(name).map(String::as_str)
    }

    /// Gives each tool call in a whole answer its client name back.
    pub fn restore(&self, response: &mut IrResponse) {
        for block in &mut response.content {
            if let Block::ToolCall(call) = block {
                self.restore_name(&mut call.name);
            }
        }
    }

    pub fn restore_name(&self, name: &mut String) {
        if let Some(original) = self.client_name(name) {
            *name = original.to_string();
        }
    }
}

fn valid(to: WireFormat, name: &str) -> bool {
    let len_ok = !name.is_empty() && name.len() <= MAX_LEN;
    len_ok
        && match to {
            WireFormat::Gemini => {
                name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && name.bytes().all(|b| gemini_char(b as char))
            }
            _ => name.bytes().all(|b| openai_char(b as char)),
        }
}

fn openai_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn gemini_char(c: char) -> bool {
    openai_char(c) || c == '.' || c == ':'
}

/// A valid name for `to`: the valid characters of `name` (others become `_`), cut to fit, then `_` and
/// eight hex digits of a hash of the whole original.
fn upstream_name(to: WireFormat, name: &str) -> String {
    let allowed = |c: char| match to {
        WireFormat::Gemini => gemini_char(c),
        _ => openai_char(c),
    };
    let mut out: String = name
        .chars()
        .map(|c| if allowed(c) { c } else { '_' })
        .take(KEPT_LEN)
        .collect();
    if to == WireFormat::Gemini && !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, '_');
        out.truncate(KEPT_LEN);
    }
    out.push_str(&format!("_{:08x}", fnv1a(name.as_bytes())));
    out
}

/// FNV-1a, 32 bits: stable across builds and replicas, which a session's renamed history relies on.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(0x811c_9dc5u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::ir::{FinishReason, Message, Role, Tool, ToolCall};

    fn tool(name: &str) -> Tool {
        Tool {
            name: name.into(),
            description: None,
            parameters: serde_json::json!({"type": "object"}),
            strict: None,
            cache_control: None,
        }
    }

    #[test]
    fn valid_names_are_left_alone() {
        let mut ir = IrRequest {
            tools: vec![tool("get_weather"), tool("a-b_C9")],
            ..IrRequest::default()
        };
        assert!(ToolNames::for_request(WireFormat::OpenAiChat, &mut ir).is_none());
        assert_eq!(ir.tools[0].name, "get_weather");
        // Dots are fine for Gemini, not for OpenAI.
        let mut ir = IrRequest {
            tools: vec![tool("mcp.fs.read")],
            ..IrRequest::default()
        };
        assert!(ToolNames::for_request(WireFormat::Gemini, &mut ir).is_none());
        assert!(ToolNames::for_request(WireFormat::OpenAiChat, &mut ir).is_some());
    }

    #[test]
    fn refused_names_are_renamed_consistently_and_restored() {
        let long = "mcp__some_server__".to_string() + &"very_long_tool_name_".repeat(5);
        let call = ToolCall {
            id: "c1".into(),
            name: long.clone(),
            arguments: "{}".into(),
            signature: None,
        };
        let mut ir = IrRequest {
            tools: vec![tool(&long), tool("fs.read"), tool("ok_name")],
            tool_choice: Some(ToolChoice::Tool(long.clone())),
            messages: vec![Message {
                role: Role::Assistant,
                content: vec![Block::ToolCall(call.clone())],
            }],
            ..IrRequest::default()
        };
        let names = ToolNames::for_request(WireFormat::OpenAiChat, &mut ir).expect("renamed");
        let sent = ir.tools[0].name.clone();
        assert!(sent.len() <= 64 && valid(WireFormat::OpenAiChat, &sent), "{sent}");
        assert!(ir.tools[1].name.starts_with("fs_read_"), "{}", ir.tools[1].name);
        assert_eq!(ir.tools[2].name, "ok_name");
        assert_eq!(ir.tool_choice, Some(ToolChoice::Tool(sent.clone())));
        let Block::ToolCall(history) = &ir.messages[0].content[0] else {
            panic!("tool call kept");
        };
        assert_eq!(history.name, sent);
        // The same name always gets the same upstream name (replicas, later turns).
        assert_eq!(upstream_name(WireFormat::OpenAiChat, &long), sent);

        let mut answer = IrResponse {
            id: None,
            model: None,
            created: None,
            content: vec![Block::ToolCall(ToolCall {
                name: sent.clone(),
                ..call
            })],
            finish: FinishReason::ToolCalls,
            stop_sequence: None,
            usage: None,
        };
        names.restore(&mut answer);
        let Block::ToolCall(back) = &answer.content[0] else {
            panic!("tool call kept");
        };
        assert_eq!(back.name, long);
        assert_eq!(names.client_name("ok_name"), None);
    }

    #[test]
    fn gemini_names_start_with_a_letter_or_underscore() {
        let renamed = upstream_name(WireFormat::Gemini, "9lives");
        assert!(renamed.starts_with("_9lives_"), "{renamed}");
        assert!(valid(WireFormat::Gemini, &renamed));
        let long = "x".repeat(200);
        assert!(valid(WireFormat::Gemini, &upstream_name(WireFormat::Gemini, &long)));
    }
}
