//! Property tests over what an attacker or a damaged disk controls: the WebSocket frame parser
//! and log-record decoding. Arbitrary bytes never panic, and the heap they make us allocate is
//! bounded (measured by a counting global allocator in this test binary).

#![allow(clippy::unwrap_used, clippy::expect_used)]
// The counting allocator below is the one unsafe thing here: it forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use ruvector_actors::storage::record::{self, Decoded, Format};
use ruvector_streaming::stream::wire::{parse_frame, Parsed};

/// Counts the bytes allocated by the current thread while `COUNTING` is set.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: delegates every call to the system allocator; it only updates thread-local counters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = COUNTING.try_with(|c| {
            if c.get() {
                let _ = ALLOCATED.try_with(|a| a.set(a.get() + layout.size()));
            }
        });
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = COUNTING.try_with(|c| {
            if c.get() {
                let _ = ALLOCATED.try_with(|a| a.set(a.get() + new_size));
            }
        });
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes allocated (in total, not net) while running `f`.
fn allocated_by<T>(f: impl FnOnce() -> T) -> (T, usize) {
    ALLOCATED.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (out, ALLOCATED.with(|a| a.get()))
}

const MAX_FRAME: usize = 64 * 1024;

/// A masked client frame header for `len` payload bytes (the payload itself not included).
fn header(opcode: u8, fin: bool, len: u64, mask: [u8; 4]) -> Vec<u8> {
    let mut h = vec![(if fin { 0x80 } else { 0 }) | (opcode & 0x0f)];
    match len {
        0..=125 => h.push(0x80 | len as u8),
        126..=0xffff => {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            h.push(0x80 | 127);
            h.extend_from_slice(&len.to_be_bytes());
        }
    }
    h.extend_from_slice(&mask);
    h
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_frame_parser_never_panics_nor_allocates_on_arbitrary_bytes(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..512)
    ) {
        let (_, heap) = allocated_by(|| {
            let _ = parse_frame(&mut bytes, MAX_FRAME);
        });
        prop_assert_eq!(heap, 0, "the parser works in place");
    }

    #[test]
    fn a_declared_length_is_never_trusted_before_the_bytes_arrive(
        opcode in prop::sample::select(vec![0u8, 1, 2, 8, 9, 10]),
        fin in any::<bool>(),
        len in 0u64..u64::MAX / 2,
        mask in any::<[u8; 4]>(),
        tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut buf = header(opcode, fin, len, mask);
        buf.extend_from_slice(&tail);
        let (parsed, heap) = allocated_by(|| match parse_frame(&mut buf, MAX_FRAME) {
            Ok(Parsed::Partial(_)) => "partial",
            Ok(Parsed::Frame(..)) => "frame",
            Err(_) => "error",
        });
        prop_assert_eq!(heap, 0);
        if len > MAX_FRAME as u64 {
            prop_assert_eq!(parsed, "error", "an oversized frame is refused at its header");
        }
    }

    #[test]
    fn an_unmasked_client_frame_is_refused_at_its_header(
        opcode in prop::sample::select(vec![1u8, 2, 9]),
        len in 0u64..100_000,
    ) {
        let mut buf = header(opcode, true, len, [0; 4]);
        buf[1] &= 0x7f; // clear the mask bit
        buf.truncate(buf.len() - 4);
        prop_assert!(parse_frame(&mut buf, MAX_FRAME).is_err());
    }

    #[test]
    fn log_records_never_panic_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        after in any::<u64>(),
    ) {
        for format in [Format::V1, Format::V2] {
            let (_, heap) = allocated_by(|| {
                let _ = record::decode(format, &bytes);
                let _ = record::resync(format, &bytes, 0, after);
            });
            prop_assert!(heap <= 4 * bytes.len() + (2 << 20), "{} bytes for {}", heap, bytes.len());
        }
    }

    #[test]
    fn checksummed_garbage_payloads_decode_to_an_error_not_a_panic(
        payload in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        // A frame whose checksum holds, so the payload reaches the deserialiser.
        let len = (payload.len() as u32).to_le_bytes();
        let mut h = crc32fast::Hasher::new();
        h.update(&len);
        h.update(&payload);
        let mut buf = b"RVR2".to_vec();
        buf.extend_from_slice(&len);
        buf.extend_from_slice(&h.finalize().to_le_bytes());
        buf.extend_from_slice(&payload);
        let (out, heap) = allocated_by(|| record::decode(Format::V2, &buf));
        // The deserialiser may pre-size a vector from a declared length, but only cautiously.
        prop_assert!(heap <= 16 * payload.len() + (2 << 20), "{} bytes for {}", heap, payload.len());
        if let Decoded::Record { len, .. } = out {
            prop_assert_eq!(len, buf.len());
        }
    }
}
