//! Watching a passed-through SSE stream for its terminator, without buffering it: a stream that ends
//! without one was cut, and the client must hear so. Only the first bytes of each line are kept.

use super::ClientApi;

/// Enough of a line to recognise `data: [DONE]` or a Responses terminal event.
const PREFIX: usize = 96;

#[derive(Debug)]
pub struct StreamWatch {
    api: ClientApi,
    line: [u8; PREFIX],
    len: usize,
    /// Bytes of the current line beyond `PREFIX` were dropped.
    long_line: bool,
    /// The last line seen was empty, i.e. the stream stands on an event boundary.
    at_boundary: bool,
    seen_any: bool,
    finished: bool,
}

impl StreamWatch {
    pub fn new(api: ClientApi) -> Self {
        Self {
            api,
            line: [0; PREFIX],
            len: 0,
            long_line: false,
            at_boundary: true,
            seen_any: false,
            finished: false,
        }
    }

    /// Feeds the next bytes of the stream as they pass to the client.
    pub fn observe(&mut self, chunk: &[u8]) {
        for &b in chunk {
            self.seen_any = true;
            match b {
                b'\n' => {
                    self.end_line();
                }
                b'\r' => {}
                _ => {
                    self.at_boundary = false;
                    if self.len < PREFIX {
                        self.line[self.len] = b;
                        self.len += 1;
                    } else {
                        self.long_line = true;
                    }
                }
            }
        }
    }

    fn end_line(&mut self) {
        let line = &self.line[..self.len];
        if line.is_empty() {
            self.at_boundary = true;
        } else if self.is_terminator(line) {
            self.finished = true;
        }
        self.len = 0;
        self.long_line = false;
    }

    fn is_terminator(&self, line: &[u8]) -> bool {
        let data = line.strip_prefix(b"data:").map(<[u8]>::trim_ascii_start);
        match self.api {
            ClientApi::ChatCompletions => data == Some(b"[DONE]".as_slice()) && !self.long_line,
            ClientApi::Responses => {
                let event = line.strip_prefix(b"event:").map(<[u8]>::trim_ascii);
                let terminal = |name: &[u8]| {
                    matches!(
                        name,
                        b"response.completed" | b"response.incomplete" | b"response.failed" | b"error"
                    )
                };
                event.is_some_and(terminal)
                    || data.is_some_and(|d| {
                        [&b"response.completed"[..], b"response.incomplete", b"response.failed"]
                            .iter()
                            .any(|t| contains(d, &[b"\"type\":\"", *t, b"\""].concat()))
                    })
            }
        }
    }

    /// The terminator was seen: the stream ended the way the API says a stream ends.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Whether the bytes so far end on an event boundary (for appending an error event).
    pub fn at_boundary(&self) -> bool {
        self.at_boundary || !self.seen_any
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_done_across_chunk_splits() {
        let stream = b"data: {\"choices\":[]}\n\ndata: [DO";
        let mut w = StreamWatch::new(ClientApi::ChatCompletions);
        w.observe(stream);
        assert!(!w.finished());
        assert!(!w.at_boundary());
        w.observe(b"NE]\r\n\r\n");
        assert!(w.finished());
        assert!(w.at_boundary());
    }

    #[test]
    fn a_cut_stream_is_not_finished() {
        let mut w = StreamWatch::new(ClientApi::ChatCompletions);
        w.observe(b"data: {\"choices\":[{\"delta\":{\"content\":\"[DONE]\"}}]}\n\n");
        assert!(!w.finished());
        let long = format!("data: {}\n\n", "x".repeat(10_000));
        w.observe(long.as_bytes());
        assert!(!w.finished());
    }

    #[test]
    fn responses_terminal_events() {
        let mut w = StreamWatch::new(ClientApi::Responses);
        w.observe(b"event: response.output_text.delta\ndata: {}\n\n");
        assert!(!w.finished());
        w.observe(b"event: response.completed\ndata: {\"type\":\"response.completed\"}\n\n");
        assert!(w.finished());
        let mut w = StreamWatch::new(ClientApi::Responses);
        w.observe(b"data: {\"type\":\"response.completed\",\"response\":{}}\n\n");
        assert!(w.finished());
    }
}
