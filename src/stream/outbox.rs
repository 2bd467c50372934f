//! A lean stream's outbound queue: ready-made frames (WebSocket frames, SSE chunks) waiting for
//! the socket, bounded in frames and bytes by the caller's limits, written with one vectored
//! write at a time and without blocking. A queued frame costs its bytes plus `FRAME_OVERHEAD`
//! (a 2-byte pong is not free). The queue's memory is given back whenever it empties, so an idle
//! stream holds none; `ruvector_stream_outbound_bytes` is the sum over all streams.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::Bytes;
use tokio::net::TcpStream;

/// What one queued frame costs beyond its bytes (the `Bytes` handle, its allocation, its queue
/// slot).
pub const FRAME_OVERHEAD: usize = 96;
/// Frames handed to one vectored write.
const WRITE_BATCH: usize = 16;

/// A socket the queue writes to (a `TcpStream`; a fake in tests).
pub trait TryWriteVectored {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize>;
}

impl TryWriteVectored for TcpStream {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
        TcpStream::try_write_vectored(self, bufs)
    }
}

/// The queue's bounds (from `stream.max_outbound_messages` / `max_outbound_bytes`).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub frames: usize,
    pub bytes: usize,
}

#[derive(Default)]
pub struct Outbox {
    frames: VecDeque<Bytes>,
    /// Cost of what is queued (bytes + overhead per frame).
    cost: usize,
    /// Bytes of the front frame already written.
    front_off: usize,
}

fn cost(f: &Bytes) -> usize {
    f.len() + FRAME_OVERHEAD
}

impl Outbox {
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The cost of what is queued.
    pub fn cost(&self) -> usize {
        self.cost
    }

    /// Whether a frame of `extra` bytes would pass the bounds.
    pub fn would_overflow(&self, extra: usize, b: Bounds) -> bool {
        self.frames.len() >= b.frames || self.cost + extra + FRAME_OVERHEAD > b.bytes
    }

    /// At or past `1/divisor` of the bounds (reading pauses at a half; producers refill below a
    /// quarter).
    pub fn past(&self, b: Bounds, divisor: usize) -> bool {
        self.cost >= b.bytes / divisor || self.frames.len() >= (b.frames / divisor).max(1)
    }

    pub fn push(&mut self, f: Bytes) {
        self.account(cost(&f) as isize);
        self.frames.push_back(f);
    }

    /// Drops queued frames from the back until `keep` remain (a half-written front frame is
    /// never dropped: what follows it must start on a frame boundary).
    pub fn truncate(&mut self, keep: usize) {
        let keep = keep.max(usize::from(self.front_off > 0));
        while self.frames.len() > keep {
            if let Some(f) = self.frames.pop_back() {
                self.account(-(cost(&f) as isize));
            }
        }
        self.release_if_empty();
    }

    /// One non-blocking vectored write of the front frames. `done` sees every frame written out
    /// whole. Returns the bytes written (0: the peer is gone) or the socket's error
    /// (`WouldBlock`: wait for writability).
    pub fn write_to(
        &mut self,
        sock: &impl TryWriteVectored,
        mut done: impl FnMut(&Bytes),
    ) -> std::io::Result<usize> {
        let mut slices = [IoSlice::new(&[]); WRITE_BATCH];
        let n = self.frames.len().min(WRITE_BATCH);
        for (i, b) in self.frames.iter().take(n).enumerate() {
            slices[i] = IoSlice::new(if i == 0 { &b[self.front_off..] } else { b });
        }
        let written = sock.try_write_vectored(&slices[..n])?;
        let mut left = written;
        while left > 0 {
            let Some(front) = self.frames.front() else {
                break;
            };
            let rest = front.len() - self.front_off;
            if left >= rest {
                left -= rest;
                done(front);
                let c = cost(front) as isize;
                self.account(-c);
                self.front_off = 0;
                self.frames.pop_front();
            } else {
                self.front_off += left;
                left = 0;
            }
        }
        self.release_if_empty();
        Ok(written)
    }

    fn release_if_empty(&mut self) {
        if self.frames.is_empty() && self.frames.capacity() > 0 {
            self.frames = VecDeque::new();
        }
    }

    fn account(&mut self, delta: isize) {
        self.cost = self.cost.saturating_add_signed(delta);
        metrics::gauge!("ruvector_stream_outbound_bytes").increment(delta as f64);
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if self.cost > 0 {
            metrics::gauge!("ruvector_stream_outbound_bytes").decrement(self.cost as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A socket that takes at most `room` bytes per write and records them.
    struct Fake {
        room: RefCell<usize>,
        got: RefCell<Vec<u8>>,
    }

    impl TryWriteVectored for Fake {
        fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
            let mut room = self.room.borrow_mut();
            if *room == 0 {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(*room - n);
                self.got.borrow_mut().extend_from_slice(&b[..take]);
                n += take;
                if n == *room {
                    break;
                }
            }
            *room -= n;
            Ok(n)
        }
    }

    fn fake(room: usize) -> Fake {
        Fake {
            room: RefCell::new(room),
            got: RefCell::new(Vec::new()),
        }
    }

    const BOUNDS: Bounds = Bounds {
        frames: 4,
        bytes: 4 * (FRAME_OVERHEAD + 10),
    };

    #[test]
    fn bounds_count_frames_and_bytes_with_their_overhead() {
        let mut q = Outbox::default();
        assert!(!q.would_overflow(10, BOUNDS));
        for _ in 0..3 {
            q.push(Bytes::from_static(b"0123456789"));
        }
        assert_eq!(q.cost(), 3 * (10 + FRAME_OVERHEAD));
        assert!(!q.would_overflow(10, BOUNDS));
        assert!(q.would_overflow(11, BOUNDS), "bytes bound");
        q.push(Bytes::from_static(b"x"));
        assert!(q.would_overflow(0, BOUNDS), "frame bound");
        assert!(q.past(BOUNDS, 2));
    }

    #[test]
    fn partial_writes_resume_mid_frame_and_whole_frames_are_reported_once() {
        let mut q = Outbox::default();
        q.push(Bytes::from_static(b"hello"));
        q.push(Bytes::from_static(b"world"));
        let sock = fake(7);
        let mut done = Vec::new();
        assert_eq!(q.write_to(&sock, |f| done.push(f.clone())).ok(), Some(7));
        assert_eq!(done, vec![Bytes::from_static(b"hello")]);
        assert_eq!(q.len(), 1);
        // The half-written frame survives a truncation: the next frame must follow it whole.
        q.truncate(0);
        assert_eq!(q.len(), 1);
        *sock.room.borrow_mut() = 100;
        assert_eq!(q.write_to(&sock, |f| done.push(f.clone())).ok(), Some(3));
        assert_eq!(&sock.got.borrow()[..], b"helloworld");
        assert_eq!(done.len(), 2);
        assert_eq!(q.cost(), 0);
    }

    #[test]
    fn an_emptied_queue_gives_its_memory_back() {
        let mut q = Outbox::default();
        for _ in 0..64 {
            q.push(Bytes::from_static(b"frame"));
        }
        assert!(q.frames.capacity() >= 64);
        let sock = fake(usize::MAX / 2);
        q.write_to(&sock, |_| {}).ok();
        q.write_to(&sock, |_| {}).ok();
        q.write_to(&sock, |_| {}).ok();
        q.write_to(&sock, |_| {}).ok();
        assert!(q.is_empty());
        assert_eq!(q.frames.capacity(), 0);
        q.push(Bytes::from_static(b"a"));
        q.truncate(0);
        assert_eq!((q.frames.capacity(), q.cost()), (0, 0));
    }

    #[test]
    fn a_blocked_socket_leaves_the_queue_untouched() {
        let mut q = Outbox::default();
        q.push(Bytes::from_static(b"abc"));
        let err = q.write_to(&fake(0), |_| {}).err().map(|e| e.kind());
        assert_eq!(err, Some(std::io::ErrorKind::WouldBlock));
        assert_eq!((q.len(), q.cost()), (1, 3 + FRAME_OVERHEAD));
    }
}
