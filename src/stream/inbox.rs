//! A WebSocket stream's inbound side: complete frames are parsed in place in the bytes just
//! read (the worker's scratch buffer), only the tail of a frame that has not fully arrived is
//! kept (and freed as soon as it completes), and fragmented messages are reassembled within
//! `stream.max_frame_bytes`. What comes out is whole messages; what breaks the protocol is a
//! close code for the caller to send.

use super::wire::{self, close, Incoming, Parsed, WireError};

/// One whole client message.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Text(&'a [u8]),
    Binary,
    Ping(&'a [u8]),
    Pong,
    Close(Option<u16>),
}

/// What the handler of a message wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Hand over the next message.
    Go,
    /// Stop here and keep the rest for later (reading paused).
    Pause,
    /// The stream is done: drop the rest.
    Stop,
}

#[derive(Default)]
pub struct Inbox {
    /// The start of a frame that has not fully arrived (empty and unallocated otherwise).
    tail: Vec<u8>,
    /// A fragmented message being reassembled: (is text, bytes so far).
    frag: Option<(bool, Vec<u8>)>,
}

impl Inbox {
    /// An inbox holding bytes that arrived before the stream started (after its upgrade head).
    pub fn with_pending(early: Vec<u8>) -> Inbox {
        Inbox {
            tail: early,
            frag: None,
        }
    }

    /// Bytes are waiting from an earlier read (a partial frame, or frames left by a pause).
    pub fn has_pending(&self) -> bool {
        !self.tail.is_empty()
    }

    /// Handles the whole messages of what is pending plus `data`, keeping an incomplete tail.
    /// `Err` carries the close code and reason when the bytes break the protocol.
    pub fn feed(
        &mut self,
        data: &mut [u8],
        max: usize,
        on: &mut dyn FnMut(Message<'_>) -> Flow,
    ) -> Result<(), WireError> {
        if self.tail.is_empty() {
            let (used, flow) = self.frames(data, max, on)?;
            if used < data.len() && flow != Flow::Stop {
                // Only what has arrived: a declared length is a claim, not bytes (a client
                // announcing a large frame and sending nothing must cost nothing).
                self.tail = data[used..].to_vec();
            }
        } else {
            let mut buf = std::mem::take(&mut self.tail);
            buf.extend_from_slice(data);
            let (used, flow) = self.frames(&mut buf, max, on)?;
            if used < buf.len() && flow != Flow::Stop {
                buf.drain(..used);
                if buf.capacity() > 2 * buf.len() + 4096 {
                    buf.shrink_to_fit();
                }
                self.tail = buf;
            }
        }
        Ok(())
    }

    /// Handles complete frames at the start of `buf`: the bytes used and how it stopped.
    fn frames(
        &mut self,
        buf: &mut [u8],
        max: usize,
        on: &mut dyn FnMut(Message<'_>) -> Flow,
    ) -> Result<(usize, Flow), WireError> {
        let mut pos = 0;
        while pos < buf.len() {
            let (frame, used) = match wire::parse_frame(&mut buf[pos..], max)? {
                Parsed::Partial(_) => return Ok((pos, Flow::Go)),
                Parsed::Frame(frame, used) => (frame, used),
            };
            pos += used;
            let flow = self.message(frame, max, on)?;
            if flow != Flow::Go {
                return Ok((pos, flow));
            }
        }
        Ok((pos, Flow::Go))
    }

    fn message(
        &mut self,
        frame: Incoming<'_>,
        max: usize,
        on: &mut dyn FnMut(Message<'_>) -> Flow,
    ) -> Result<Flow, WireError> {
        let inside = || WireError::Close(close::PROTOCOL, "data frame inside a fragmented message");
        Ok(match frame {
            Incoming::Text(t) if self.frag.is_none() => on(Message::Text(t)),
            Incoming::Binary if self.frag.is_none() => on(Message::Binary),
            Incoming::Text(_) | Incoming::Binary => return Err(inside()),
            Incoming::Ping(p) => on(Message::Ping(p)),
            Incoming::Pong => on(Message::Pong),
            Incoming::Close(code) => on(Message::Close(code)),
            Incoming::Fragment {
                first,
                payload,
                last,
            } => {
                match (first, self.frag.as_mut()) {
                    (Some(text), None) => self.frag = Some((text, payload.to_vec())),
                    (None, Some((_, buf))) => {
                        if buf.len() + payload.len() > max {
                            self.frag = None;
                            return Err(WireError::Close(close::TOO_BIG, "message too big"));
                        }
                        buf.extend_from_slice(payload);
                    }
                    (Some(_), Some(_)) => return Err(inside()),
                    (None, None) => {
                        return Err(WireError::Close(close::PROTOCOL, "bad fragment sequence"))
                    }
                }
                match (last, self.frag.take()) {
                    (true, Some((true, msg))) => on(Message::Text(&msg)),
                    (true, Some((false, _))) => on(Message::Binary),
                    (false, frag) => {
                        self.frag = frag;
                        Flow::Go
                    }
                    (true, None) => Flow::Go,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [9u8, 8, 7, 6];
        let mut v = vec![
            if fin { 0x80 } else { 0 } | opcode,
            0x80 | payload.len() as u8,
        ];
        v.extend_from_slice(&mask);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        v
    }

    /// Feeds `bytes` in pieces of `step`, collecting messages as text.
    fn collect(inbox: &mut Inbox, bytes: &[u8], step: usize) -> Result<Vec<String>, WireError> {
        let mut got = Vec::new();
        for piece in bytes.chunks(step) {
            let mut piece = piece.to_vec();
            inbox.feed(&mut piece, 1024, &mut |m| {
                got.push(match m {
                    Message::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    other @ (Message::Binary
                    | Message::Ping(_)
                    | Message::Pong
                    | Message::Close(_)) => format!("{other:?}"),
                });
                Flow::Go
            })?;
        }
        Ok(got)
    }

    #[test]
    fn fragments_are_reassembled_around_control_frames_even_byte_by_byte() {
        let mut bytes = masked(0x1, false, b"hel");
        bytes.extend(masked(0x9, true, b"p"));
        bytes.extend(masked(0x0, false, b"lo "));
        bytes.extend(masked(0x0, true, b"world"));
        bytes.extend(masked(0x1, true, b"next"));
        for step in [1, 3, bytes.len()] {
            let mut inbox = Inbox::default();
            let got = collect(&mut inbox, &bytes, step).expect("valid stream");
            assert_eq!(got, ["Ping([112])", "hello world", "next"], "step {step}");
            assert!(!inbox.has_pending());
            assert!(inbox.frag.is_none() && inbox.tail.capacity() == 0);
        }
    }

    #[test]
    fn broken_fragment_sequences_close_with_the_protocol_code() {
        let mut inbox = Inbox::default();
        let err = collect(&mut inbox, &masked(0x0, true, b"x"), 64).err();
        assert_eq!(
            err,
            Some(WireError::Close(close::PROTOCOL, "bad fragment sequence"))
        );
        let mut bytes = masked(0x1, false, b"a");
        bytes.extend(masked(0x1, true, b"b"));
        let err = collect(&mut Inbox::default(), &bytes, 64).err();
        assert!(matches!(err, Some(WireError::Close(close::PROTOCOL, _))));
    }

    #[test]
    fn a_reassembled_message_is_bounded_by_the_frame_limit() {
        let mut bytes = Vec::new();
        bytes.extend(masked(0x1, false, &[b'a'; 100]));
        for _ in 0..10 {
            bytes.extend(masked(0x0, false, &[b'a'; 100]));
        }
        let err = collect(&mut Inbox::default(), &bytes, 64).err();
        assert_eq!(
            err,
            Some(WireError::Close(close::TOO_BIG, "message too big"))
        );
    }

    #[test]
    fn a_pause_keeps_the_unread_frames_for_later() {
        let mut bytes = masked(0x1, true, b"one");
        bytes.extend(masked(0x1, true, b"two"));
        let mut inbox = Inbox::default();
        let mut seen = 0;
        inbox
            .feed(&mut bytes, 1024, &mut |_| {
                seen += 1;
                Flow::Pause
            })
            .expect("valid");
        assert_eq!(seen, 1);
        assert!(inbox.has_pending());
        let got = collect(&mut inbox, &[], 1).expect("valid");
        assert!(got.is_empty(), "chunks of nothing feed nothing");
        let mut nothing = [];
        let mut rest = Vec::new();
        inbox
            .feed(&mut nothing, 1024, &mut |m| {
                rest.push(format!("{m:?}"));
                Flow::Go
            })
            .expect("valid");
        assert_eq!(rest, ["Text([116, 119, 111])"]);
        assert!(!inbox.has_pending());
    }
}
