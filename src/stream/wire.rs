//! WebSocket on the wire (RFC 6455), with our own buffer discipline.
//!
//! tungstenite parses and formats frame headers and derives the accept key; what is ours is where
//! the bytes live. No stream owns a buffer while it is quiet: reads go into a per-thread scratch
//! buffer and are parsed in place; only the tail of a frame that has not fully arrived is copied
//! into a buffer of the stream's own, which is freed as soon as the frame completes. Outbound
//! frames are built once (header in a reserved prefix, no second copy) and queued as `Bytes`.

use std::io::Cursor;

use bytes::Bytes;
use serde::Serialize;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// Bytes reserved in front of a serialized payload for the largest server frame header.
const HEADER_ROOM: usize = 10;

/// Size of the per-thread read buffer every stream of a worker thread shares.
pub const SCRATCH_BYTES: usize = 64 * 1024;

/// Close codes of the contract.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    pub const UNSUPPORTED: u16 = 1003;
    /// A text message that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const IDLE: u16 = 4001;
    pub const SLOW_CONSUMER: u16 = 4002;
    pub const RATE_ABUSE: u16 = 4029;
}

/// One complete client frame, payload unmasked.
pub enum Incoming<'a> {
    Text(&'a [u8]),
    Binary,
    Ping(&'a [u8]),
    Pong,
    Close(Option<u16>),
    /// A fragment of a message (text or binary); `last` ends the message.
    Fragment {
        first: Option<bool>,
        payload: &'a [u8],
        last: bool,
    },
}

/// Why a client's bytes cannot be read any further.
#[derive(Debug, PartialEq, Eq)]
pub enum WireError {
    /// Close with this code and reason.
    Close(u16, &'static str),
}

/// The result of looking for one frame at the start of `buf`.
pub enum Parsed<'a> {
    /// A frame and the bytes it took.
    Frame(Incoming<'a>, usize),
    /// More bytes are needed; the frame will take this many in total (when known).
    Partial(Option<usize>),
}

/// Parses one frame at the start of `buf`, unmasking its payload in place. `max` bounds a frame's
/// payload (1009 past it, before any of it is buffered).
pub fn parse_frame(buf: &mut [u8], max: usize) -> Result<Parsed<'_>, WireError> {
    let mut cur = Cursor::new(&buf[..]);
    let (header, len) = match FrameHeader::parse(&mut cur) {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(Parsed::Partial(None)),
        Err(_) => return Err(WireError::Close(close::PROTOCOL, "malformed frame header")),
    };
    let head = cur.position() as usize;
    // Everything the header alone can refute is refuted before a byte of payload is awaited.
    if header.rsv1 || header.rsv2 || header.rsv3 {
        return Err(WireError::Close(close::PROTOCOL, "reserved bits set"));
    }
    let Some(mask) = header.mask else {
        return Err(WireError::Close(
            close::PROTOCOL,
            "client frames must be masked",
        ));
    };
    if let OpCode::Control(_) = header.opcode {
        if !header.is_final || len > 125 {
            return Err(WireError::Close(close::PROTOCOL, "bad control frame"));
        }
    }
    if len > max as u64 {
        return Err(WireError::Close(close::TOO_BIG, "frame too big"));
    }
    let total = head + len as usize;
    if buf.len() < total {
        return Ok(Parsed::Partial(Some(total)));
    }
    let payload = &mut buf[head..total];
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
    let payload = &buf[head..total];
    let frame = match header.opcode {
        OpCode::Control(c) => match c {
            Control::Ping => Incoming::Ping(payload),
            Control::Pong => Incoming::Pong,
            Control::Close => Incoming::Close(close_code(payload)?),
            Control::Reserved(_) => {
                return Err(WireError::Close(close::PROTOCOL, "unknown control opcode"))
            }
        },
        OpCode::Data(d) => match (d, header.is_final) {
            (Data::Text, true) => Incoming::Text(payload),
            (Data::Binary, true) => Incoming::Binary,
            (Data::Text, false) => Incoming::Fragment {
                first: Some(true),
                payload,
                last: false,
            },
            (Data::Binary, false) => Incoming::Fragment {
                first: Some(false),
                payload,
                last: false,
            },
            (Data::Continue, last) => Incoming::Fragment {
                first: None,
                payload,
                last,
            },
            (Data::Reserved(_), _) => {
                return Err(WireError::Close(close::PROTOCOL, "unknown data opcode"))
            }
        },
    };
    Ok(Parsed::Frame(frame, total))
}

/// The status code of a close frame's payload, checked as RFC 6455 §7.4 asks: codes that must
/// never be sent (1005, 1006, 1015, below 1000, unassigned) and a non-UTF-8 reason are errors,
/// so an echo can never put an invalid code on the wire.
fn close_code(payload: &[u8]) -> Result<Option<u16>, WireError> {
    match payload {
        [] => Ok(None),
        [_] => Err(WireError::Close(
            close::PROTOCOL,
            "close payload of one byte",
        )),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let sendable = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !sendable {
                return Err(WireError::Close(close::PROTOCOL, "invalid close code"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(WireError::Close(
                    close::INVALID_DATA,
                    "close reason is not UTF-8",
                ));
            }
            Ok(Some(code))
        }
    }
}

fn frame_from(opcode: OpCode, mut v: Vec<u8>) -> Bytes {
    let len = v.len() - HEADER_ROOM;
    let mut head = Vec::with_capacity(HEADER_ROOM);
    let header = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    // Writing into a Vec cannot fail.
    let _ = header.format(len as u64, &mut head);
    let start = HEADER_ROOM - head.len();
    v[start..HEADER_ROOM].copy_from_slice(&head);
    Bytes::from(v).slice(start..)
}

/// A text frame holding `value` as JSON, serialized once into its final buffer.
pub fn text_frame(value: &impl Serialize) -> Bytes {
    let mut v = Vec::with_capacity(128);
    v.resize(HEADER_ROOM, 0);
    if serde_json::to_writer(&mut v, value).is_err() {
        v.truncate(HEADER_ROOM);
        v.extend_from_slice(
            br#"{"type":"error","id":null,"code":"internal","message":"unserializable reply"}"#,
        );
    }
    frame_from(OpCode::Data(Data::Text), v)
}

/// A text frame of JSON already rendered (an event shared by many streams).
pub fn json_text_frame(json: &str) -> Bytes {
    let mut v = Vec::with_capacity(HEADER_ROOM + json.len());
    v.resize(HEADER_ROOM, 0);
    v.extend_from_slice(json.as_bytes());
    frame_from(OpCode::Data(Data::Text), v)
}

pub fn control_frame(c: Control, payload: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(HEADER_ROOM + payload.len());
    v.resize(HEADER_ROOM, 0);
    v.extend_from_slice(&payload[..payload.len().min(125)]);
    frame_from(OpCode::Control(c), v)
}

pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(&reason.as_bytes()[..reason.len().min(120)]);
    control_frame(Control::Close, &p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut v = vec![if fin { 0x80 } else { 0 } | opcode];
        if payload.len() < 126 {
            v.push(0x80 | payload.len() as u8);
        } else {
            v.push(0x80 | 126);
            v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        v.extend_from_slice(&mask);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        v
    }

    #[test]
    fn frames_parse_in_place_and_partial_frames_wait() {
        let mut buf = masked(1, true, b"{\"type\":\"ping\"}");
        let n = buf.len();
        let Parsed::Frame(Incoming::Text(t), used) = parse_frame(&mut buf, 1024).unwrap() else {
            panic!("expected a text frame")
        };
        assert_eq!(t, b"{\"type\":\"ping\"}");
        assert_eq!(used, n);
        let mut big = masked(1, true, &[b'a'; 300]);
        let total = big.len();
        assert!(matches!(
            parse_frame(&mut big[..100], 1024).unwrap(),
            Parsed::Partial(Some(t)) if t == total
        ));
        assert!(matches!(
            parse_frame(&mut big[..1], 1024).unwrap(),
            Parsed::Partial(None)
        ));
        assert_eq!(
            parse_frame(&mut big, 200).err(),
            Some(WireError::Close(close::TOO_BIG, "frame too big"))
        );
        // Unmasked client frames are a protocol error.
        let mut bad = vec![0x81, 0x01, b'x'];
        assert!(matches!(
            parse_frame(&mut bad, 1024),
            Err(WireError::Close(close::PROTOCOL, _))
        ));
        let mut close = masked(8, true, &4001u16.to_be_bytes());
        assert!(matches!(
            parse_frame(&mut close, 1024).unwrap(),
            Parsed::Frame(Incoming::Close(Some(4001)), _)
        ));
    }

    #[test]
    fn server_frames_have_minimal_headers() {
        let f = text_frame(&serde_json::json!({"type": "pong"}));
        assert_eq!(f[0], 0x81);
        assert_eq!(f[1] as usize, f.len() - 2);
        let long = "x".repeat(70_000);
        let f = text_frame(&long);
        assert_eq!(f[1], 127);
        assert_eq!(f.len(), 10 + long.len() + 2);
        let c = close_frame(4002, "slow consumer");
        assert_eq!(&c[..4], &[0x88, 15, 0x0f, 0xa2]);
    }
}
