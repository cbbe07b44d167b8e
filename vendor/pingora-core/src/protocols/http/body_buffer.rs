// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};

/// A buffer with size limit. When the total amount of data written to the buffer is below the limit
/// all the data will be held in the buffer. Otherwise, the buffer will report to be truncated.
///
/// APIProxy patch: the pieces are kept as the `Bytes` they arrived in (a reference count, no copy);
/// a body that came in one piece is handed back without a copy, one in several is joined once and
/// the joined copy is kept for every later call (each upstream attempt asks for it again).
pub struct FixedBuffer {
    pieces: Vec<Bytes>,
    /// Small pieces, copied together (APIProxy patch): a body sent in tiny chunks would otherwise
    /// cost a `Bytes` and an allocation per chunk, many times its own size.
    small: BytesMut,
    joined: OnceLock<Bytes>,
    len: usize,
    capacity: usize,
    truncated: bool,
}

impl FixedBuffer {
    pub fn new(capacity: usize) -> Self {
        FixedBuffer {
            pieces: Vec::new(),
            small: BytesMut::new(),
            joined: OnceLock::new(),
            len: 0,
            capacity,
            truncated: false,
        }
    }

    pub fn write_to_buffer(&mut self, data: &Bytes) {
        if self.truncated || data.is_empty() {
            return;
        }
        self.joined = OnceLock::new();

        if self.len + data.len() <= self.capacity {
            // APIProxy patch: the first piece is kept as it is, whatever its size: a body read in
            // one piece (most) comes back from `get_buffer` without a copy.
            if data.len() < SMALL_PIECE && self.len > 0 {
                self.small.extend_from_slice(data);
            } else {
                if !self.small.is_empty() {
                    self.pieces.push(self.small.split().freeze());
                }
                self.pieces.push(data.clone());
            }
            self.len += data.len();
        } else {
            // Buffered data is no longer usable for a retry, so release its allocation.
            self.pieces = Vec::new();
            self.small = BytesMut::new();
            self.len = 0;
            self.truncated = true;
        }
    }

    pub fn clear(&mut self) {
        self.joined = OnceLock::new();
        self.truncated = false;
        self.pieces.clear();
        self.small.clear();
        self.len = 0;
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }
    pub fn get_buffer(&self) -> Option<Bytes> {
        // TODO: return None if truncated?
        match self.pieces.as_slice() {
            [] if self.small.is_empty() => None,
            [one] if self.small.is_empty() => Some(one.clone()),
            pieces => Some(
                self.joined
                    .get_or_init(|| {
                        let mut joined = BytesMut::with_capacity(self.len);
                        for piece in pieces {
                            joined.extend_from_slice(piece);
                        }
                        joined.extend_from_slice(&self.small);
                        joined.freeze()
                    })
                    .clone(),
            ),
        }
    }
}

/// Pieces smaller than this are copied together rather than kept one by one.
const SMALL_PIECE: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_pieces_are_kept_together_in_order() {
        let mut buffer = FixedBuffer::new(1 << 20);
        let big = Bytes::from(vec![b'x'; SMALL_PIECE]);
        for piece in [&b"a"[..], b"b", &big, b"c", b"d"] {
            buffer.write_to_buffer(&Bytes::copy_from_slice(piece));
        }
        assert_eq!(buffer.pieces.len(), 3, "\"a\" (the first, kept), \"b\", the big piece; \"cd\" copied together");
        let mut want = b"ab".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"cd");
        assert_eq!(buffer.get_buffer().as_deref(), Some(&want[..]));
        let mut only_small = FixedBuffer::new(16);
        only_small.write_to_buffer(&Bytes::from_static(b"{"));
        only_small.write_to_buffer(&Bytes::from_static(b"}"));
        assert_eq!(only_small.get_buffer().as_deref(), Some(&b"{}"[..]));
        // A body in one piece comes back as that piece, not a copy.
        let mut one = FixedBuffer::new(1 << 20);
        let body = Bytes::copy_from_slice(&[b'y'; 1024]);
        one.write_to_buffer(&body);
        assert_eq!(one.get_buffer().map(|b| b.as_ptr()), Some(body.as_ptr()));
    }

    #[test]
    fn releases_storage_when_truncated() {
        let mut buffer = FixedBuffer::new(4);
        buffer.write_to_buffer(&Bytes::from_static(b"1234"));
        assert_eq!(buffer.get_buffer().as_deref(), Some(&b"1234"[..]));

        buffer.write_to_buffer(&Bytes::from_static(b"5"));

        assert!(buffer.is_truncated());
        assert!(buffer.pieces.is_empty());
        assert!(buffer.get_buffer().is_none());
    }
}
