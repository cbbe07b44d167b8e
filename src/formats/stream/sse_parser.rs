//! Incremental framing of upstream streams: SSE (`\n` or `\r\n`, multi-line `data:`, comments) and Gemini's
//! streamed JSON array. Events may split anywhere across chunks; a partial event is bounded by `max_event_bytes`.

use super::StreamError;

/// A stream that opens with a UTF-8 byte-order mark: the SSE standard drops it, or the first field's
/// name would be `\u{feff}data` and the first event lost.
pub(crate) fn strip_bom(stream_start: &[u8]) -> &[u8] {
    stream_start.strip_prefix(BOM).unwrap_or(stream_start)
}

/// UTF-8's byte-order mark.
pub(crate) const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One framed event.
#[derive(Debug, Default)]
pub(crate) struct Frame<'a> {
    pub event: Option<&'a str>,
    pub data: &'a str,
    /// The event's bytes as received, when the parser keeps them (for passthrough filtering).
    pub raw: &'a [u8],
}

/// SSE parser. Lines are collected until the blank line that ends an event. Lines end in `\n`, `\r\n` or a
/// lone `\r`, as the SSE standard allows.
#[derive(Debug)]
pub(crate) struct SseParser {
    line: Vec<u8>,
    data: Vec<u8>,
    event: String,
    has_data: bool,
    keep_raw: bool,
    raw: Vec<u8>,
    max: usize,
    /// The last chunk ended in `\r`: a `\n` that opens the next one belongs to that line end.
    after_cr: bool,
}

impl SseParser {
    pub fn new(max: usize, keep_raw: bool) -> Self {
        Self {
            line: Vec::new(),
            data: Vec::new(),
            event: String::new(),
            has_data: false,
            keep_raw,
            raw: Vec::new(),
            max,
            after_cr: false,
        }
    }

    pub fn push(&mut self, mut chunk: &[u8], on_frame: &mut dyn FnMut(Frame<'_>)) -> Result<(), StreamError> {
        // An empty chunk says nothing, not even whether a `\n` follows a `\r` that ended the last.
        if chunk.is_empty() {
            return Ok(());
        }
        if std::mem::take(&mut self.after_cr) {
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
                if self.keep_raw {
                    let closed_an_event = self.raw.is_empty();
                    self.raw.push(b'\n');
                    if closed_an_event {
                        // The line end closed an event already handed over: pass its last byte on.
                        on_frame(Frame {
                            event: None,
                            data: "",
                            raw: &self.raw,
                        });
                        self.raw.clear();
                    }
                }
            }
        }
        while !chunk.is_empty() {
            // (line length, line end length); no line end yet: the line continues in the next chunk.
            let (len, end) = match memchr::memchr2(b'\n', b'\r', chunk) {
                Some(p) if chunk[p] == b'\r' => match chunk.get(p + 1) {
                    Some(b'\n') => (p, 2),
                    Some(_) => (p, 1),
                    None => {
                        self.after_cr = true;
                        (p, 1)
                    }
                },
                Some(p) => (p, 1),
                None => (chunk.len(), 0),
            };
            let segment = &chunk[..len];
            // Kept raw bytes already hold the partial line; otherwise it is held apart from the data.
            let held = if self.keep_raw {
                self.raw.len()
            } else {
                self.line.len() + self.data.len()
            };
            if held + segment.len() > self.max {
                return Err(StreamError::EventTooLarge { limit: self.max });
            }
            if self.keep_raw {
                self.raw.extend_from_slice(&chunk[..len + end]);
            }
            chunk = &chunk[len + end..];
            if end == 0 {
                self.line.extend_from_slice(segment);
            } else if self.line.is_empty() {
                // The usual case: the whole line is in this chunk and is read where it lies.
                self.end_line(segment, on_frame);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(segment);
                self.end_line(&line, on_frame);
                line.clear();
                self.line = line;
                give_back(&mut self.line);
            }
        }
        Ok(())
    }

    /// The stream has ended. Its last event may lack the blank line that closes it (`data:
    /// [DONE]\n`, then the end; servers that leave it out are common): handed over, with the line
    /// ends it lacked, when its data is whole (`[DONE]` or a JSON value). A cut one is dropped, as the
    /// SSE standard drops every unclosed event.
    pub fn finish(&mut self, on_frame: &mut dyn FnMut(Frame<'_>)) {
        self.after_cr = false;
        let line = std::mem::take(&mut self.line);
        if !line.is_empty() {
            // A field line (a blank one would have no bytes): it never hands an event over.
            self.end_line(&line, on_frame);
            if self.keep_raw {
                self.raw.push(b'\n');
            }
        }
        let whole = self.has_data
            && std::str::from_utf8(&self.data).is_ok_and(|data| {
                data.trim() == "[DONE]" || serde_json::from_str::<serde::de::IgnoredAny>(data).is_ok()
            });
        if whole {
            if self.keep_raw {
                // Its last line ended with a lone `\r`: a `\n` alone would make that one CRLF line
                // end, and the event would still lack its blank line.
                if self.raw.last() == Some(&b'\r') {
                    self.raw.extend_from_slice(b"\n\n");
                } else {
                    self.raw.push(b'\n');
                }
            }
            self.end_line(&[], on_frame);
        }
        self.data.clear();
        self.event.clear();
        self.has_data = false;
        self.raw.clear();
    }

    fn end_line(&mut self, line: &[u8], on_frame: &mut dyn FnMut(Frame<'_>)) {
        if line.is_empty() {
            if self.has_data || !self.event.is_empty() {
                // Invalid UTF-8 cannot be JSON: hand over an empty payload, which decoders ignore.
                let data = std::str::from_utf8(&self.data).unwrap_or("");
                let event = (!self.event.is_empty()).then_some(self.event.as_str());
                on_frame(Frame {
                    event,
                    data,
                    raw: &self.raw,
                });
            } else if self.keep_raw && !self.raw.is_empty() {
                // Comments and stray blank lines pass through as they came.
                on_frame(Frame {
                    event: None,
                    data: "",
                    raw: &self.raw,
                });
            }
            self.data.clear();
            self.event.clear();
            self.has_data = false;
            self.raw.clear();
            give_back(&mut self.data);
            give_back(&mut self.raw);
        } else if line[0] != b':' {
            let (field, value) = match line.iter().position(|b| *b == b':') {
                Some(p) => {
                    let v = &line[p + 1..];
                    (&line[..p], v.strip_prefix(b" ").unwrap_or(v))
                }
                None => (line, &[][..]),
            };
            match field {
                b"data" => {
                    if self.has_data {
                        self.data.push(b'\n');
                    }
                    self.data.extend_from_slice(value);
                    self.has_data = true;
                }
                b"event" => {
                    self.event.clear();
                    self.event.push_str(std::str::from_utf8(value).unwrap_or(""));
                }
                _ => {}
            }
        }
    }
}

/// Gemini's streamed JSON array `[{…},\r\n{…}]`: each top-level object is an event.
#[derive(Debug)]
pub(crate) struct JsonArrayParser {
    obj: Vec<u8>,
    depth: usize,
    in_string: bool,
    escaped: bool,
    max: usize,
}

impl JsonArrayParser {
    pub fn new(max: usize) -> Self {
        Self {
            obj: Vec::new(),
            depth: 0,
            in_string: false,
            escaped: false,
            max,
        }
    }

    pub fn push(&mut self, chunk: &[u8], on_frame: &mut dyn FnMut(Frame<'_>)) -> Result<(), StreamError> {
        for &b in chunk {
            if self.depth == 0 {
                // Between objects: `[`, `,`, whitespace and `]` are framing.
                if b == b'{' {
                    self.depth = 1;
                    self.obj.clear();
                    self.obj.push(b);
                }
                continue;
            }
            if self.obj.len() >= self.max {
                return Err(StreamError::EventTooLarge { limit: self.max });
            }
            self.obj.push(b);
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        let data = std::str::from_utf8(&self.obj).unwrap_or("");
                        on_frame(Frame {
                            event: None,
                            data,
                            raw: &self.obj,
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// What an emptied buffer may keep of its capacity: past this, one large event (a base64 image
/// of several MiB) is given back once handed over, not held for the rest of the stream.
const KEPT_CAPACITY: usize = 256 * 1024;

fn give_back(buf: &mut Vec<u8>) {
    if buf.capacity() > KEPT_CAPACITY {
        *buf = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream's one large event does not keep its buffers' size for the rest of the stream.
    #[test]
    fn a_large_event_s_buffers_are_given_back() {
        for keep_raw in [false, true] {
            let mut p = SseParser::new(16 << 20, keep_raw);
            let big = format!("data: {{\"b64\":\"{}\"}}", "A".repeat(4 << 20));
            let (head, tail) = big.as_bytes().split_at(1 << 20);
            let mut seen = 0;
            for piece in [head, tail, b"\n\ndata: {}\n\n".as_slice()] {
                p.push(piece, &mut |f| seen += usize::from(!f.data.is_empty())).unwrap();
            }
            assert_eq!(seen, 2);
            let held = p.line.capacity() + p.data.capacity() + p.raw.capacity();
            assert!(held <= 3 * KEPT_CAPACITY, "keep_raw={keep_raw}: {held} bytes held");
        }
    }

    fn collect(p: &mut SseParser, input: &[u8]) -> Vec<(Option<String>, String)> {
        let mut out = Vec::new();
        p.push(input, &mut |f| {
            if !f.data.is_empty() || f.event.is_some() {
                out.push((f.event.map(str::to_string), f.data.to_string()))
            }
        })
        .unwrap();
        out
    }

    #[test]
    fn a_last_event_ended_by_a_lone_cr_gets_its_blank_line() {
        let mut p = SseParser::new(1024, true);
        let mut raw = Vec::new();
        let mut keep = |f: Frame<'_>| raw.extend_from_slice(f.raw);
        p.push(b"data: {\"a\":1}\r", &mut keep).unwrap();
        p.finish(&mut keep);
        assert_eq!(raw, b"data: {\"a\":1}\r\n\n", "a CRLF, then a blank line");
    }

    #[test]
    fn crlf_multiline_comments() {
        let mut p = SseParser::new(1024, false);
        let got = collect(&mut p, b": ping\r\nevent: a\r\ndata: x\r\ndata:y\r\n\r\ndata: z\n\n");
        assert_eq!(got, vec![(Some("a".into()), "x\ny".into()), (None, "z".into())]);
    }

    #[test]
    fn lone_cr_ends_lines_also_across_chunks() {
        let input: &[u8] = b"event: a\rdata: x\r\rdata: y\r\n\r\ndata: z\n\n";
        for split in 0..=input.len() {
            let mut p = SseParser::new(1024, false);
            let mut got = collect(&mut p, &input[..split]);
            // An empty read between the two says nothing of a `\r` waiting for its `\n`.
            got.extend(collect(&mut p, b""));
            got.extend(collect(&mut p, &input[split..]));
            let want = vec![(Some("a".into()), "x".into()), (None, "y".into()), (None, "z".into())];
            assert_eq!(got, want, "split at {split}");
        }
    }

    #[test]
    fn raw_bytes_pass_through_whole_wherever_a_crlf_splits() {
        let input: &[u8] = b": hi\r\ndata: x\r\n\r\ndata: y\r\n\r\n";
        for split in 0..=input.len() {
            let mut p = SseParser::new(1024, true);
            let mut raw = Vec::new();
            let mut data = Vec::new();
            for part in [&input[..split], &input[split..]] {
                p.push(part, &mut |f| {
                    raw.extend_from_slice(f.raw);
                    if !f.data.is_empty() {
                        data.push(f.data.to_string());
                    }
                })
                .unwrap();
            }
            assert_eq!(raw, input, "split at {split}");
            assert_eq!(data, vec!["x", "y"], "split at {split}");
        }
    }

    #[test]
    fn bounded() {
        let mut p = SseParser::new(16, false);
        assert!(p.push(b"data: 0123456789abcdefghij", &mut |_| {}).is_err());
        // An event just under the bound passes, in one piece or many, its raw bytes kept or not.
        let event = b"data: 0123456\n\n";
        for keep_raw in [false, true] {
            for piece in [1, 3, event.len()] {
                let mut p = SseParser::new(event.len(), keep_raw);
                let mut seen = 0;
                for part in event.chunks(piece) {
                    p.push(part, &mut |f| seen += usize::from(f.data == "0123456")).unwrap();
                }
                assert_eq!(seen, 1, "keep_raw {keep_raw}, pieces of {piece}");
            }
        }
    }

    #[test]
    fn json_array_with_braces_in_strings() {
        let mut p = JsonArrayParser::new(1024);
        let mut got = Vec::new();
        p.push(b"[{\"a\":\"}{\\\"\"},\r\n{\"b\":[1,{}]}]", &mut |f| {
            got.push(f.data.to_string())
        })
        .unwrap();
        assert_eq!(got, vec![r#"{"a":"}{\""}"#.to_string(), r#"{"b":[1,{}]}"#.to_string()]);
    }
}
