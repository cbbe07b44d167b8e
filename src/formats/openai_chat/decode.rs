//! OpenAI Chat chunks → stream events (formats.md §4.6).

use serde_json::Value;

use super::parse_finish;
use crate::formats::json::*;
use crate::formats::stream::events::{Choices, Decode, StreamEvent};
use crate::formats::usage::Usage;

#[derive(Debug, Default)]
pub struct ChatDecoder {
    started: bool,
    /// The calls so far, in the order they appeared. Some OpenAI-compatibles repeat index 0 with
    /// new ids.
    tools: Vec<ToolCall>,
    /// Calls started for the client so far: the next one's dense index (a call is numbered when
    /// it is named, so the client sees them in order).
    announced: usize,
    current_tool: Option<usize>,
    usage: Option<Usage>,
    finished: bool,
    done: bool,
    errored: bool,
    /// `n > 1` passed through: choice 0's finish is not the answer's end.
    choices: Choices,
}

impl ChatDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    fn tool_index(
        &mut self,
        upstream: u64,
        id: Option<&str>,
        out: &mut Vec<StreamEvent>,
        name: Option<&str>,
        brings_args: bool,
    ) -> usize {
        // A new call always carries its name: a chunk without one continues the last call with its
        // upstream index, even when it brings an id that call did not have or a different one (some
        // servers send an id on every chunk, and change it). A call still unnamed takes the first
        // name that comes for its index, whatever id comes with it.
        let known = self.tools.iter().rposition(|t| {
            t.upstream == upstream
                && (t.client_index.is_none() || name.is_none() || id.is_none_or(|id| id == t.id))
                && !t.ended_by(id, name, brings_args)
        });
        match known {
            Some(k) => k,
            None => self.start_tool(upstream, id, out, name),
        }
    }

    fn start_tool(&mut self, upstream: u64, id: Option<&str>, out: &mut Vec<StreamEvent>, name: Option<&str>) -> usize {
        let k = self.tools.len();
        self.tools.push(ToolCall {
            upstream,
            id: id.map_or_else(|| new_id("call_"), str::to_string),
            name: String::new(),
            args: String::new(),
            client_index: None,
            closed: JsonEnd::default(),
            named_again: false,
        });
        if let Some(name) = name {
            self.announce(k, name, out);
        }
        k
    }

    /// Starts call `k` for the client once its name is known (some servers send the id first and
    /// the name in a later chunk, or `"name": ""` first): with the arguments held until then.
    fn announce(&mut self, k: usize, name: &str, out: &mut Vec<StreamEvent>) {
        let index = self.announced;
        self.announced += 1;
        let t = &mut self.tools[k];
        t.name = name.to_string();
        t.client_index = Some(index);
        out.push(StreamEvent::ToolStart {
            index,
            id: t.id.clone(),
            name: t.name.clone(),
            signature: None,
        });
        if !t.args.is_empty() {
            out.push(StreamEvent::ToolArgs {
                index,
                delta: t.args.clone(),
            });
        }
    }

    /// Calls no chunk named still reach the client, arguments and all, before the answer ends.
    fn announce_unnamed(&mut self, out: &mut Vec<StreamEvent>) {
        for k in 0..self.tools.len() {
            if self.tools[k].client_index.is_none() {
                self.announce(k, "", out);
            }
        }
    }
}

/// A tool call being streamed.
#[derive(Debug)]
struct ToolCall {
    /// Its index upstream.
    upstream: u64,
    id: String,
    name: String,
    /// Its arguments so far.
    args: String,
    /// Its index for the client, once its `ToolStart` went out (it has a name).
    client_index: Option<usize>,
    /// Where its arguments stand as one JSON value.
    closed: JsonEnd,
    /// Its name came again, with no id nor arguments, after its arguments were whole: a trailing
    /// repeat, or the opening chunk of another call of the same function. Arguments that follow
    /// tell which.
    named_again: bool,
}

impl ToolCall {
    /// Whether a chunk at this call's index without an id starts another call (servers that send
    /// each call at index 0, without ids): it names another function, or it brings arguments
    /// while this call's are already whole and the chunk, or one just before it, named the
    /// function again. The same name again before then continues it (servers that repeat the name
    /// on every chunk), as does the name repeated with no arguments after none follow (a trailing
    /// chunk: no second call). An unnamed call is continued by its name.
    fn ended_by(&self, id: Option<&str>, name: Option<&str>, brings_args: bool) -> bool {
        self.client_index.is_some()
            && id.is_none()
            && (name.is_some_and(|name| name != self.name)
                || (self.closed.whole() && brings_args && (name.is_some() || self.named_again)))
    }

    fn push_args(&mut self, args: &str) {
        self.args.push_str(args);
        self.closed.feed(args.as_bytes());
    }
}

/// Whether arguments streamed in pieces have closed their top-level object, followed byte by byte
/// as they come (re-parsing everything so far on each piece would be quadratic in a long call).
#[derive(Debug, Default, Clone, Copy)]
struct JsonEnd {
    depth: u32,
    opened: bool,
    in_string: bool,
    escaped: bool,
}

impl JsonEnd {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.in_string {
                match b {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    self.opened = true;
                    self.depth += 1;
                }
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
        }
    }

    /// An object or array was opened and every bracket since is closed.
    fn whole(&self) -> bool {
        self.opened && self.depth == 0 && !self.in_string
    }
}

impl Decode for ChatDecoder {
    fn decode(&mut self, _event: Option<&str>, data: &str, out: &mut Vec<StreamEvent>) {
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            self.announce_unnamed(out);
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        // An error object, or TGI's message alone; `"error": {}`, `""` or `false` say nothing.
        let said =
            |e: &&Value| e.as_object().is_some_and(|o| !o.is_empty()) || e.as_str().is_some_and(|s| !s.is_empty());
        if let Some(err) = v.get("error").filter(said) {
            self.errored = true;
            out.push(StreamEvent::Error {
                // TGI sends the message as the error itself.
                message: str_at(err, "message")
                    .or_else(|| err.as_str())
                    .unwrap_or("upstream error")
                    .to_string(),
                code: str_at(err, "code")
                    .or_else(|| str_at(err, "type"))
                    .unwrap_or("upstream_error")
                    .to_string(),
            });
            return;
        }
        if !self.started {
            self.started = true;
            // Azure opens with a content-filter chunk whose id and model are "" and created 0:
            // placeholders, not values (the encoders make their own).
            out.push(StreamEvent::Meta {
                id: str_at(&v, "id").filter(|s| !s.is_empty()).map(str::to_string),
                model: str_at(&v, "model").filter(|s| !s.is_empty()).map(str::to_string),
                created: u64_at(&v, "created").filter(|c| *c > 0),
            });
        }
        for c in arr_at(&v, "choices") {
            let finished = str_at(c, "finish_reason").is_some_and(|fr| !fr.is_empty());
            self.choices.saw(u64_at(c, "index").unwrap_or(0), finished);
        }
        if let Some(choice) = arr_at(&v, "choices")
            .iter()
            .find(|c| u64_at(c, "index").unwrap_or(0) == 0)
        {
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            if let Some(r) = str_at(delta, "reasoning_content").or_else(|| str_at(delta, "reasoning")) {
                if !r.is_empty() {
                    out.push(StreamEvent::Thinking(r.to_string()));
                }
            }
            if let Some(t) = str_at(delta, "content").filter(|t| !t.is_empty()) {
                out.push(StreamEvent::Text(t.to_string()));
            }
            // A refusal (structured outputs), as in a whole answer.
            if let Some(r) = str_at(delta, "refusal").filter(|r| !r.is_empty()) {
                out.push(StreamEvent::Refusal(r.to_string()));
            }
            out.extend(super::images_of(delta).map(StreamEvent::Image));
            // Content as parts (Mistral's reasoning models: `{"type": "thinking", "thinking":
            // [{"type": "text", "text": …}]}`, then `{"type": "text", "text": …}`).
            for part in arr_at(delta, "content") {
                match str_at(part, "type") {
                    Some("thinking") => {
                        for t in arr_at(part, "thinking").iter().filter_map(|t| str_at(t, "text")) {
                            if !t.is_empty() {
                                out.push(StreamEvent::Thinking(t.to_string()));
                            }
                        }
                    }
                    _ => {
                        if let Some(t) = str_at(part, "text").filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::Text(t.to_string()));
                        }
                    }
                }
            }
            for tc in arr_at(delta, "tool_calls") {
                let f = tc.get("function").unwrap_or(&Value::Null);
                let upstream = u64_at(tc, "index").unwrap_or(0);
                let id = str_at(tc, "id").filter(|s| !s.is_empty());
                let name = str_at(f, "name").filter(|s| !s.is_empty());
                let args = super::request::arguments_text(f.get("arguments"));
                let brings_args = !args.is_empty();
                let k = match (id, self.current_tool) {
                    // A continuation chunk without an id belongs to the call with that upstream index.
                    (None, Some(cur)) if self.tools[cur].upstream == upstream => {
                        if self.tools[cur].ended_by(id, name, brings_args) {
                            // Arguments after the name came again: another call of that function.
                            let again = name.is_none().then(|| self.tools[cur].name.clone());
                            self.start_tool(upstream, id, out, name.or(again.as_deref()))
                        } else {
                            cur
                        }
                    }
                    _ => self.tool_index(upstream, id, out, name, brings_args),
                };
                self.current_tool = Some(k);
                let call = &mut self.tools[k];
                if id.is_none() && !brings_args && call.closed.whole() && name == Some(call.name.as_str()) {
                    call.named_again = true;
                }
                if let Some(name) = name.filter(|_| self.tools[k].client_index.is_none()) {
                    self.announce(k, name, out);
                }
                if !args.is_empty() {
                    self.tools[k].push_args(&args);
                    if let Some(index) = self.tools[k].client_index {
                        out.push(StreamEvent::ToolArgs { index, delta: args });
                    }
                }
            }
            // Some servers (Ollama, SGLang) send `""` for "not finished" on every chunk.
            if let Some(fr) = str_at(choice, "finish_reason").filter(|fr| !fr.is_empty()) {
                self.finished = true;
                self.announce_unnamed(out);
                out.push(StreamEvent::Finish {
                    reason: parse_finish(fr),
                    stop_sequence: None,
                });
            }
        }
        if let Some(u) = v.get("usage").and_then(Usage::from_openai_chat) {
            self.usage = Some(u.clone());
            out.push(StreamEvent::Usage(u));
        }
    }

    fn completed(&self) -> bool {
        // [DONE], or every choice's finish_reason: a stream cut between the finish chunk and [DONE]
        // lost nothing but usage.
        self.done || (self.finished && self.choices.all_finished())
    }

    fn terminated(&self) -> bool {
        self.done
    }

    fn errored(&self) -> bool {
        self.errored
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(d: &mut ChatDecoder, chunk: &str) {
        d.decode(None, chunk, &mut Vec::new());
    }

    #[test]
    fn arguments_are_whole_when_their_object_closes_outside_strings() {
        let whole = |pieces: &[&str]| {
            let mut end = JsonEnd::default();
            pieces.iter().for_each(|p| end.feed(p.as_bytes()));
            end.whole()
        };
        assert!(whole(&[r#"{"a":"#, r#"[1,{"b":2}]}"#]));
        assert!(whole(&[r#" {"s":"}{\"]"}"#]));
        assert!(!whole(&[r#"{"s":"}"#]));
        assert!(!whole(&[r#"{"s":"a\"#, r#""}"#]));
        assert!(!whole(&[r#"{"a":{}"#]));
        assert!(!whole(&["", "  "]));
    }

    #[test]
    fn only_an_error_that_says_something_is_an_error() {
        for empty in [r#"{}"#, r#""""#, "false", "null"] {
            let mut d = ChatDecoder::new();
            let mut out = Vec::new();
            d.decode(None, &format!(r#"{{"error":{empty},"choices":[]}}"#), &mut out);
            assert!(!d.errored(), "{empty}");
            assert!(!out.iter().any(|e| matches!(e, StreamEvent::Error { .. })), "{empty}");
        }
        for said in [r#"{"message":"overloaded"}"#, r#""overloaded""#] {
            let mut d = ChatDecoder::new();
            feed(&mut d, &format!(r#"{{"error":{said}}}"#));
            assert!(d.errored(), "{said}");
        }
    }

    #[test]
    fn an_answer_of_several_choices_is_complete_when_each_has_finished() {
        let mut one = ChatDecoder::new();
        feed(
            &mut one,
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}"#,
        );
        assert!(!one.completed());
        feed(
            &mut one,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        );
        assert!(one.completed() && !one.terminated());
        feed(&mut one, "[DONE]");
        assert!(one.terminated());

        let mut two = ChatDecoder::new();
        feed(
            &mut two,
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}"#,
        );
        feed(
            &mut two,
            r#"{"choices":[{"index":1,"delta":{"content":"b"},"finish_reason":null}]}"#,
        );
        feed(
            &mut two,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        );
        assert!(!two.completed(), "choice 1 is still streaming");
        feed(
            &mut two,
            r#"{"choices":[{"index":1,"delta":{},"finish_reason":"length"}]}"#,
        );
        assert!(two.completed());
    }
}
