//! Token usage in each format's own semantics, normalised to OpenAI's (formats.md §3.2): `input_tokens` is the
//! TOTAL input including cached tokens, `output_tokens` includes reasoning.

use serde_json::{json, Value};

use super::json::u64_at;

/// Token counts of one request, OpenAI semantics.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// All input tokens, cached and cache-written included.
    pub input_tokens: u64,
    /// All output tokens, reasoning included.
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub reasoning_tokens: u64,
}

impl Usage {
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    /// Anthropic's `input_tokens`, which excludes cache reads and writes.
    fn uncached_input(&self) -> u64 {
        self.input_tokens
            .saturating_sub(self.cached_input_tokens)
            .saturating_sub(self.cache_creation_input_tokens)
    }

    /// OpenAI Chat `usage`: `total_tokens == prompt_tokens + completion_tokens` always.
    pub fn to_openai_chat(&self) -> Value {
        let mut v = json!({
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.total_tokens(),
            "prompt_tokens_details": {"cached_tokens": self.cached_input_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        });
        if self.cache_creation_input_tokens > 0 {
            // Non-standard, as LiteLLM: OpenAI has no cache-write count.
            v["cache_creation_input_tokens"] = self.cache_creation_input_tokens.into();
        }
        v
    }

    pub fn from_openai_chat(v: &Value) -> Option<Usage> {
        if !v.is_object() {
            return None;
        }
        let details = v.get("prompt_tokens_details").unwrap_or(&Value::Null);
        let out_details = v.get("completion_tokens_details").unwrap_or(&Value::Null);
        Some(Usage {
            input_tokens: u64_at(v, "prompt_tokens").unwrap_or(0),
            output_tokens: u64_at(v, "completion_tokens").unwrap_or(0),
            cached_input_tokens: u64_at(details, "cached_tokens").unwrap_or(0),
            cache_creation_input_tokens: u64_at(v, "cache_creation_input_tokens").unwrap_or(0),
            reasoning_tokens: u64_at(out_details, "reasoning_tokens").unwrap_or(0),
        })
    }

    pub fn to_responses(&self) -> Value {
        json!({
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_input_tokens},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.total_tokens(),
        })
    }

    pub fn from_responses(v: &Value) -> Option<Usage> {
        if !v.is_object() {
            return None;
        }
        let details = v.get("input_tokens_details").unwrap_or(&Value::Null);
        let out_details = v.get("output_tokens_details").unwrap_or(&Value::Null);
        Some(Usage {
            input_tokens: u64_at(v, "input_tokens").unwrap_or(0),
            output_tokens: u64_at(v, "output_tokens").unwrap_or(0),
            cached_input_tokens: u64_at(details, "cached_tokens").unwrap_or(0),
            cache_creation_input_tokens: 0,
            reasoning_tokens: u64_at(out_details, "reasoning_tokens").unwrap_or(0),
        })
    }

    pub fn to_anthropic(&self) -> Value {
        json!({
            "input_tokens": self.uncached_input(),
            "output_tokens": self.output_tokens,
            "cache_read_input_tokens": self.cached_input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
        })
    }

    pub fn from_anthropic(v: &Value) -> Option<Usage> {
        if !v.is_object() {
            return None;
        }
        let read = u64_at(v, "cache_read_input_tokens").unwrap_or(0);
        let write = u64_at(v, "cache_creation_input_tokens").unwrap_or(0);
        Some(Usage {
            input_tokens: u64_at(v, "input_tokens")
                .unwrap_or(0)
                .saturating_add(read)
                .saturating_add(write),
            output_tokens: u64_at(v, "output_tokens").unwrap_or(0),
            cached_input_tokens: read,
            cache_creation_input_tokens: write,
            reasoning_tokens: 0,
        })
    }

    /// Merges a streamed Anthropic `message_delta.usage` (cumulative) into what `message_start` said: fields
    /// present override (✔SDK behaviour), absent ones are kept.
    pub fn merge_anthropic(&mut self, v: &Value) {
        let read = u64_at(v, "cache_read_input_tokens");
        let write = u64_at(v, "cache_creation_input_tokens");
        let uncached = u64_at(v, "input_tokens");
        if read.is_some() || write.is_some() || uncached.is_some() {
            let read = read.unwrap_or(self.cached_input_tokens);
            let write = write.unwrap_or(self.cache_creation_input_tokens);
            let uncached = uncached.unwrap_or_else(|| self.uncached_input());
            self.cached_input_tokens = read;
            self.cache_creation_input_tokens = write;
            self.input_tokens = uncached.saturating_add(read).saturating_add(write);
        }
        if let Some(out) = u64_at(v, "output_tokens") {
            self.output_tokens = out;
        }
    }

    pub fn to_gemini(&self) -> Value {
        let mut v = json!({
            "promptTokenCount": self.input_tokens,
            "candidatesTokenCount": self.output_tokens.saturating_sub(self.reasoning_tokens),
            "totalTokenCount": self.total_tokens(),
        });
        if self.reasoning_tokens > 0 {
            v["thoughtsTokenCount"] = self.reasoning_tokens.into();
        }
        if self.cached_input_tokens > 0 {
            v["cachedContentTokenCount"] = self.cached_input_tokens.into();
        }
        v
    }

    pub fn from_gemini(v: &Value) -> Option<Usage> {
        if !v.is_object() {
            return None;
        }
        let g = |camel: &str, snake: &str| u64_at(v, camel).or_else(|| u64_at(v, snake)).unwrap_or(0);
        let thoughts = g("thoughtsTokenCount", "thoughts_token_count");
        Some(Usage {
            input_tokens: g("promptTokenCount", "prompt_token_count")
                .saturating_add(g("toolUsePromptTokenCount", "tool_use_prompt_token_count")),
            // candidatesTokenCount excludes thoughts.
            output_tokens: g("candidatesTokenCount", "candidates_token_count").saturating_add(thoughts),
            cached_input_tokens: g("cachedContentTokenCount", "cached_content_token_count"),
            cache_creation_input_tokens: 0,
            reasoning_tokens: thoughts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_input_excludes_cache_and_round_trips() {
        let u = Usage::from_anthropic(&json!({"input_tokens": 10, "output_tokens": 5,
            "cache_read_input_tokens": 100, "cache_creation_input_tokens": 7}))
        .unwrap();
        assert_eq!(u.input_tokens, 117);
        assert_eq!(u.to_anthropic()["input_tokens"], 10);
        let chat = u.to_openai_chat();
        assert_eq!(chat["total_tokens"], 122);
        assert_eq!(chat["prompt_tokens_details"]["cached_tokens"], 100);
    }

    #[test]
    fn gemini_output_includes_thoughts() {
        let u = Usage::from_gemini(&json!({"promptTokenCount": 25, "candidatesTokenCount": 40,
            "thoughtsTokenCount": 10, "totalTokenCount": 75, "cachedContentTokenCount": 5}))
        .unwrap();
        assert_eq!(
            (
                u.input_tokens,
                u.output_tokens,
                u.reasoning_tokens,
                u.cached_input_tokens
            ),
            (25, 50, 10, 5)
        );
        let g = u.to_gemini();
        assert_eq!(g["candidatesTokenCount"], 40);
        assert_eq!(g["totalTokenCount"], 75);
        let chat = u.to_openai_chat();
        assert_eq!(chat["total_tokens"], 75);
    }

    #[test]
    fn streamed_anthropic_delta_overrides_present_fields_only() {
        let mut u = Usage::from_anthropic(&json!({"input_tokens": 25, "output_tokens": 1,
            "cache_read_input_tokens": 3}))
        .unwrap();
        u.merge_anthropic(&json!({"output_tokens": 40}));
        assert_eq!((u.input_tokens, u.output_tokens, u.cached_input_tokens), (28, 40, 3));
        u.merge_anthropic(&json!({"input_tokens": 30, "output_tokens": 41}));
        assert_eq!((u.input_tokens, u.output_tokens), (33, 41));
    }
}
