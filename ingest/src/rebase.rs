//! Timestamps that keep going when a stream's publisher reconnects: what a push target or an
//! RTMP player was sent continues from where it was, although a reconnected encoder starts
//! its clock again (OBS and ffmpeg restart at 0).

/// Milliseconds between the last message before the break and the first after it.
const GAP_MS: u32 = 40;

/// The offset added to a publisher's RTMP timestamps before they go out.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rebase {
    offset: u32,
    /// The highest timestamp sent (tracks interleave, so the last sent may be behind).
    last: Option<u32>,
    /// A new publisher continues: its first timestamp sets the offset.
    continuing: bool,
}

impl Rebase {
    /// The timestamp to send for the publisher's `timestamp` (wrapping like RTMP's).
    pub(crate) fn apply(&mut self, timestamp: u32) -> u32 {
        if self.continuing {
            self.continuing = false;
            if let Some(last) = self.last {
                self.offset = last.wrapping_add(GAP_MS).wrapping_sub(timestamp);
            }
        }
        let out = timestamp.wrapping_add(self.offset);
        self.last = Some(self.last.map_or(out, |last| last.max(out)));
        out
    }

    /// The next message comes from a new publisher of the same stream.
    pub(crate) fn continue_after_break(&mut self) {
        self.continuing = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_publisher_continues_the_clock() {
        let mut rebase = Rebase::default();
        assert_eq!(rebase.apply(1000), 1000);
        assert_eq!(rebase.apply(5000), 5000);
        rebase.continue_after_break();
        assert_eq!(rebase.apply(0), 5040);
        assert_eq!(rebase.apply(33), 5073);
        rebase.continue_after_break();
        assert_eq!(rebase.apply(u32::MAX), 5113);
    }
}
