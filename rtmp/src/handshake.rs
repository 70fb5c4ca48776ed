//! The server side of the RTMP handshake.
//!
//! Implements the plain handshake of the RTMP specification (Adobe, 2012) §5.2: C0+C1 in,
//! S0+S1+S2 out (S2 echoes C1), then C2 in. The digest ("complex") handshake of Flash
//! Player 9 is not needed by publishers: ffmpeg and OBS (librtmp) accept the plain one when
//! publishing, as they do from Nginx-RTMP and SRS.

/// RTMP version byte (C0/S0).
const RTMP_VERSION: u8 = 3;
/// C1, C2, S1 and S2 are all this long.
pub const HANDSHAKE_PACKET_LEN: usize = 1536;

/// Why a handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// C0 named a version other than 3 (6 is RTMPE; anything else is not RTMP at all).
    #[error("client asked for RTMP version {0}; only 3 (plain RTMP) is served")]
    UnsupportedVersion(u8),
}

/// Where the handshake is.
#[derive(Debug, Clone)]
enum State {
    AwaitingC0C1,
    AwaitingC2,
    Done,
}

/// Progress of a handshake after some bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// More bytes are needed. `reply` (possibly empty) must be sent to the client.
    InProgress {
        /// Bytes for the client.
        reply: Vec<u8>,
    },
    /// The handshake is complete; the first `consumed` input bytes belonged to it and the
    /// rest are RTMP chunks.
    Done {
        /// Bytes of this input the handshake used.
        consumed: usize,
        /// Bytes for the client.
        reply: Vec<u8>,
    },
}

/// The server's handshake state machine.
#[derive(Debug, Clone)]
pub struct Handshake {
    state: State,
    /// Bytes received but not yet complete enough to act on (at most C0+C1).
    buffer: Vec<u8>,
    /// Seeds the S1 filler; S1's random part is not a security feature in plain RTMP.
    seed: u32,
}

impl Handshake {
    /// A handshake waiting for C0 and C1; `seed` varies the S1 filler bytes.
    pub fn new(seed: u32) -> Self {
        Self {
            state: State::AwaitingC0C1,
            buffer: Vec::with_capacity(1 + HANDSHAKE_PACKET_LEN),
            seed,
        }
    }

    /// Whether the handshake has finished.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Feeds bytes from the client.
    pub fn handle_bytes(&mut self, input: &[u8]) -> Result<Progress, HandshakeError> {
        let mut consumed = 0;
        let mut reply = Vec::new();
        loop {
            let rest = &input[consumed..];
            match self.state {
                State::AwaitingC0C1 => {
                    let want = 1 + HANDSHAKE_PACKET_LEN - self.buffer.len();
                    let take = want.min(rest.len());
                    self.buffer.extend_from_slice(&rest[..take]);
                    consumed += take;
                    if self.buffer[..].first().is_some_and(|&v| v != RTMP_VERSION) {
                        return Err(HandshakeError::UnsupportedVersion(self.buffer[0]));
                    }
                    if take < want {
                        return Ok(Progress::InProgress { reply });
                    }
                    reply.reserve(1 + 2 * HANDSHAKE_PACKET_LEN);
                    reply.push(RTMP_VERSION);
                    // S1: time (0), zero, filler.
                    reply.extend_from_slice(&[0; 8]);
                    let mut x = self.seed | 1;
                    for _ in 0..(HANDSHAKE_PACKET_LEN - 8) {
                        // xorshift32: cheap, non-constant filler.
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        reply.push(x as u8);
                    }
                    // S2: C1 echoed.
                    reply.extend_from_slice(&self.buffer[1..]);
                    self.buffer.clear();
                    self.state = State::AwaitingC2;
                }
                State::AwaitingC2 => {
                    let want = HANDSHAKE_PACKET_LEN - self.buffer.len();
                    let take = want.min(rest.len());
                    // C2's content (S1 echoed) is not checked, as most servers do not.
                    self.buffer.extend_from_slice(&rest[..take]);
                    consumed += take;
                    if take < want {
                        return Ok(Progress::InProgress { reply });
                    }
                    self.buffer = Vec::new();
                    self.state = State::Done;
                }
                State::Done => return Ok(Progress::Done { consumed, reply }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c1() -> Vec<u8> {
        (0..HANDSHAKE_PACKET_LEN).map(|i| (i * 31) as u8).collect()
    }

    #[test]
    fn replies_s0_s1_s2_then_completes_on_c2() {
        let mut hs = Handshake::new(7);
        let mut input = vec![RTMP_VERSION];
        input.extend(c1());
        let Progress::InProgress { reply } = hs.handle_bytes(&input).unwrap() else { panic!() };
        assert_eq!(reply.len(), 1 + 2 * HANDSHAKE_PACKET_LEN);
        assert_eq!(reply[0], RTMP_VERSION);
        assert_eq!(&reply[1 + HANDSHAKE_PACKET_LEN..], &c1()[..]);
        let mut c2_and_chunk = vec![0; HANDSHAKE_PACKET_LEN];
        c2_and_chunk.extend_from_slice(&[0x02, 0xaa]);
        assert_eq!(
            hs.handle_bytes(&c2_and_chunk).unwrap(),
            Progress::Done { consumed: HANDSHAKE_PACKET_LEN, reply: Vec::new() }
        );
        assert!(hs.is_done());
    }

    #[test]
    fn any_split_of_the_input_gives_the_same_result() {
        let mut all = vec![RTMP_VERSION];
        all.extend(c1());
        all.extend(vec![9; HANDSHAKE_PACKET_LEN]);
        all.extend_from_slice(b"rest");
        for split in [1, 2, 100, 1536, 1537, 1538, 3000, 3073, 3074] {
            let mut hs = Handshake::new(7);
            let mut replies = Vec::new();
            let mut after = Vec::new();
            for part in [&all[..split], &all[split..]] {
                if hs.is_done() {
                    after.extend_from_slice(part);
                    continue;
                }
                match hs.handle_bytes(part).unwrap() {
                    Progress::InProgress { reply } => replies.extend(reply),
                    Progress::Done { consumed, reply } => {
                        replies.extend(reply);
                        after.extend_from_slice(&part[consumed..]);
                    }
                }
            }
            assert_eq!(after, b"rest", "split {split}");
            assert_eq!(replies.len(), 1 + 2 * HANDSHAKE_PACKET_LEN);
        }
    }

    #[test]
    fn garbage_instead_of_c0_is_refused_at_once() {
        let mut hs = Handshake::new(1);
        assert_eq!(
            hs.handle_bytes(b"GET / HTTP/1.1\r\n"),
            Err(HandshakeError::UnsupportedVersion(b'G'))
        );
        let mut hs = Handshake::new(1);
        assert_eq!(hs.handle_bytes(&[6]), Err(HandshakeError::UnsupportedVersion(6)));
    }
}
