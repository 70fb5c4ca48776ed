//! Merged reads: how long a publisher's bytes may gather in the socket between reads.
//!
//! An encoder sends ~80 RTMP messages a second per 720p30 stream, in ~150 TCP packets;
//! reading each as it arrives costs a wake-up of the runtime's event loop, a task poll and a
//! `recv`, the largest share of the server's CPU under load when every message is read alone.
//! SRS's "merged read" (`mr`) sleeps between reads to take several messages at once, at the
//! price of that much latency on every message.
//!
//! Here bytes gather only where that does not delay a cut: HLS viewers see media when a
//! segment closes (or, low-latency, a part ends), and the packager says which frame is
//! expected to make the next cut (the keyframe at the segment's target, or the first frame
//! past the part's target on the video frames' cadence). The read that takes that frame is
//! timed to its arrival, as an [`ArrivalClock`] of the publisher's recent frames predicts
//! it: a cut comes when its frame does, or [`CUT_FRAME_MARGIN`] after the frame was due if
//! it came early, and a frame due but not there turns reads immediate until it comes.
//!
//! Bytes gather in the kernel, and a timer reads them. [`ReadPacer`] sets the socket's
//! receive low-water mark (`SO_RCVLOWAT`, see [`low_water`](crate::low_water)) a pause's
//! worth of the publisher's measured byte rate beyond what is expected by the next read, so
//! neither the event loop nor the task wakes for the packets in between (a timer that
//! merely delayed the read left the event loop waking for every packet), and the
//! connection's timer reads what is queued, past the runtime's readiness: 2 ms after the
//! cut's frame is due when that is within one and a half pauses, else at the next tick.
//! Ticks are instants a pause apart, the same for every connection, so one wake-up of a
//! thread reads all its publishers: reading each when its own mark was reached woke the
//! thread once per read, and those wake-ups were most of what a read cost (at 32
//! publishers, a fifth of the server's CPU). The mark wakes the reader only for a burst, or
//! for a stream whose bytes up to the read pass [`MAX_LOW_WATER`] (above ~5 Mbit/s before a
//! tick, ~3.5 Mbit/s before a cut 300 ms away, at 200 ms pauses), read then at its own
//! phase.
//! Whenever the last read filled the read buffer (a backlog: more may be queued), reads are
//! immediate. What is not foreseen, and may then wait up to the next tick (or the mark): a
//! forced cut (`MAX_SEGMENT_BYTES`), a video frame off the cadence (the packager expects
//! frames on the shortest of the last few intervals; at a rising frame rate one may come
//! sooner, and a frame after dropped ones may end a part sooner, by less than it came
//! late). Once a segment has reached the target duration and waits for a keyframe (long
//! GOPs), the next frame is expected each time, so streams with GOPs longer than the
//! target gather less.
//!
//! The [`ArrivalClock`] learns from reads the socket woke (their bytes just arrived) and
//! from reads on the timer by the kernel's stamp of their last packet's arrival
//! (`SO_TIMESTAMPNS`): the time of such a read says nothing of when its frames came.

use std::time::{Duration, Instant};

use packager::NextCut;

/// Default pause, the ticks' period: at a 2.6 Mbit/s stream ~65 KB wait in the socket
/// between ticks, and reads fall from ~80 a second to 5 and those timed to cuts. Cuts do
/// not wait for it (the read that takes a cut's frame is timed to it); media relayed as
/// read (RTMP players, pushes) waits up to one and a half pauses, as with SRS's merged read, whose
/// `mr_latency` default is 350 ms. 200 ms and a 64 KiB mark took 10-13 % off the CPU per
/// stream at 32 and 64 publishers against 100 ms and 32 KiB, which took 9-13 % off 50 ms and
/// 16 KiB (`benches/results/2026-12-07-read-pause-2.md`, `2026-12-07-read-pause.md`); reads
/// on shared ticks took 15-22 % more off (`2026-12-08-read-ticks.md`).
pub const DEFAULT_MAX_READ_PAUSE: Duration = Duration::from_millis(200);
/// Pauses shorter than this are not worth gathering for.
pub const MIN_READ_PAUSE: Duration = Duration::from_millis(5);
/// The read before a cut comes this long after the frame expected to make it is due: a
/// frame sent on time is there by then (loopback or a LAN, and the timer's 1 ms tick), so
/// one wake-up takes it. Less than [`MIN_READ_PAUSE`], so once the frame is due and not
/// there, reads are immediate until it comes.
pub const CUT_FRAME_MARGIN: Duration = Duration::from_millis(2);
const _: () = assert!(CUT_FRAME_MARGIN.as_micros() < MIN_READ_PAUSE.as_micros());

/// Largest receive low-water mark asked of the kernel: half the 256 KiB read buffer, so a
/// read woken by it, with what arrived between the wake-up and the read (a video frame an
/// encoder sent at once), rarely fills the buffer (a backlog); twice a pause of a 2.6
/// Mbit/s stream, so that the tick, not the mark, makes its reads. A publisher's socket
/// holds what gathers between reads (a pause's worth, up to this much), in kernel memory
/// (with the kernel's per-packet overhead), not the process's.
pub const MAX_LOW_WATER: usize = crate::socket::READ_BUFFER / 2;
/// Marks' worth of payload room a publisher's socket gets before its bytes gather: while
/// one mark's worth gathers, the TCP window stays open for as much again, so the reader is
/// woken by the mark rather than by a full buffer.
pub const MARKS_IN_ROOM: usize = 2;
/// The room the connection has the kernel make ([`make_room`]) in a plain socket's receive
/// buffer before its first mark: the default 128 KiB buffer holds about half a mark of
/// payload for Ethernet packets (the kernel's payload-to-buffer ratio, `scaling_ratio`, is about
/// 1/2 there; nearly 1 on loopback), so the kernel raises it (unlocked: receive autotuning
/// still grows it for a long link). Made at the first mark, not at accept, the raise
/// follows the ratio measured on the publisher's packets (Linux 6.5 and later), a few KiB on
/// loopback: there a buffer raised at accept, to a new socket's pessimistic ratio, cost
/// about 5 % more CPU per stream than none; one raised at the first mark measured 3 % more,
/// within the runs' spread (`benches/results/2026-12-07-read-pause-2.md`).
///
/// [`make_room`]: crate::low_water::WindowGuard::make_room
pub const ROOM: usize = MARKS_IN_ROOM * MAX_LOW_WATER;
/// A cut whose frame is due within this many half pauses is read when it comes, skipping
/// the tick before it (a read gathered over up to one and a half pauses): a tick and then a
/// cut a few milliseconds later would be two wake-ups where one does.
pub const CUT_SPAN_HALF_PAUSES: u32 = 3;
/// A publisher's byte rate is measured over windows this long.
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// The timer never waits longer than the no-media timeout divided by this, so media
/// gathered below the mark is always read before a publisher could be taken for silent.
pub const NO_MEDIA_SHARE: u32 = 4;

/// What the connection does before its next read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextRead {
    /// Read as soon as any byte is there (low-water mark 1).
    Immediate,
    /// Let the kernel wake the connection only once `low_water` bytes are queued, and read
    /// whatever is there when `fallback` has passed (a tick, or a cut's frame due),
    /// whichever comes first.
    Gather {
        /// Bytes queued before the socket reports readable (`SO_RCVLOWAT`).
        low_water: usize,
        /// When to read whatever is there anyway.
        fallback: Duration,
    },
}

/// Paces one publisher's reads: a timer reads at the ticks every connection shares, or
/// when a cut's frame is due, and the socket's receive low-water mark keeps the kernel
/// from waking the connection or its event loop for the packets in between. Sans-IO: the
/// caller sets the socket option and the timer as told.
#[derive(Debug, Clone)]
pub struct ReadPacer {
    max_pause: Duration,
    /// The instant the grid of ticks counts from, the same for every connection.
    ticks: Instant,
    /// Longest wait for the timer (a share of the no-media timeout).
    max_wait: Duration,
    /// Highest mark for this socket (0: never gather).
    max_low_water: usize,
    window_start: Option<Instant>,
    window_bytes: u64,
    /// Bytes per second, once a window has been measured.
    rate: Option<u64>,
    /// The mark the socket has now.
    low_water: usize,
    /// When the publisher's frames arrive, for timing a read to a cut.
    arrivals: ArrivalClock,
}

/// Where a publisher's timeline falls on the server's clock: at each read the socket woke,
/// the read's time, and at each the timer made, the kernel's stamp of its last packet's
/// arrival, less the latest decode time it brought; the least over the current rate window
/// and the one before. No frame is read before it arrives, so the least comes from the
/// read that followed its frame's arrival most closely. A publisher
/// whose timestamps jump, or whose sending drifts, is followed within two windows; until
/// then, and for frames that come late, a frame is expected early, and a read that finds
/// it not there only turns reads immediate until it comes.
#[derive(Debug, Clone, Default)]
struct ArrivalClock {
    /// The first read: times are counted from it.
    anchor: Option<Instant>,
    /// The least read time less decode time (microseconds since `anchor`), this window.
    current: Option<i128>,
    /// The same over the window before.
    previous: Option<i128>,
}

impl ArrivalClock {
    /// A read at `now` brought media up to decode time `latest`.
    fn observe(&mut self, now: Instant, latest: Duration) {
        let anchor = *self.anchor.get_or_insert(now);
        let offset =
            now.saturating_duration_since(anchor).as_micros() as i128 - latest.as_micros() as i128;
        self.current = Some(self.current.map_or(offset, |least| least.min(offset)));
    }

    /// A new rate window starts.
    fn next_window(&mut self) {
        self.previous = self.current.take();
    }

    /// How long after `now` the frame with decode time `media` is expected (zero if it is
    /// due already); `None` before any read was observed.
    fn until(&self, now: Instant, media: Duration) -> Option<Duration> {
        let anchor = self.anchor?;
        let offset = match (self.current, self.previous) {
            (Some(a), Some(b)) => a.min(b),
            (one, other) => one.or(other)?,
        };
        let due = offset + media.as_micros() as i128;
        let now = now.saturating_duration_since(anchor).as_micros() as i128;
        Some(Duration::from_micros(u64::try_from(due - now).unwrap_or(0)))
    }
}

impl ReadPacer {
    /// A pacer gathering about `max_pause` of media (zero: every read immediate), with marks
    /// up to [`MAX_LOW_WATER`] (half the [`ROOM`] asked for, until [`Self::set_room`] says
    /// what was made), for a publisher taken for silent after `no_media_timeout`.
    /// Reads not timed to a cut fall on the ticks `max_pause` apart from `ticks`: give every
    /// connection the same instant.
    pub fn new(max_pause: Duration, no_media_timeout: Duration, ticks: Instant) -> Self {
        Self {
            max_pause,
            ticks,
            max_wait: no_media_timeout / NO_MEDIA_SHARE,
            max_low_water: MAX_LOW_WATER,
            window_start: None,
            window_bytes: 0,
            rate: None,
            low_water: 1,
            arrivals: ArrivalClock::default(),
        }
    }

    /// The socket has `room` bytes of payload room (what the kernel made of the room asked
    /// for, at the first mark): marks stay within [`MARKS_IN_ROOM`] of it. Returns the mark
    /// to set now in place of the one planned.
    pub fn set_room(&mut self, room: usize) -> usize {
        self.max_low_water = self.max_low_water.min(room / MARKS_IN_ROOM);
        self.low_water = self.low_water.min(self.max_low_water).max(1);
        self.low_water
    }

    /// The low-water mark the socket has now; above 1 the timer must be armed.
    pub fn low_water(&self) -> usize {
        self.low_water
    }

    /// After a read the socket woke (its mark was reached, or any byte came while the
    /// mark was 1): `n` bytes into a buffer of `buffer` bytes at `now` (when the read
    /// returned), with `next_cut` the frame expected to close the open segment (or part).
    /// Returns how to wait for the next read, and the new mark if the socket's must change.
    pub fn after_read(
        &mut self,
        n: usize,
        buffer: usize,
        now: Instant,
        next_cut: Option<NextCut>,
    ) -> (NextRead, Option<usize>) {
        // Bytes the socket reported have just arrived: their latest frame with them.
        self.after_read_arrived(n, buffer, now, Some(now), next_cut)
    }

    /// As [`Self::after_read`], for a read whose last bytes `arrived` then, as the kernel
    /// stamped them: a read the timer made (a tick, or a cut's frame due), whose bytes
    /// gathered over the pause. The time of such a read says nothing of when frames arrive
    /// (a tick falls at the same phase of a publisher's frames each time, so a clock taken
    /// from the reads would expect every frame that much late; one taken from reads timed to
    /// cuts would drift later with each), so without a stamp it does not set the clock.
    pub fn after_read_arrived(
        &mut self,
        n: usize,
        buffer: usize,
        now: Instant,
        arrived: Option<Instant>,
        next_cut: Option<NextCut>,
    ) -> (NextRead, Option<usize>) {
        if let (Some(arrived), Some(cut)) = (arrived, next_cut) {
            self.arrivals.observe(arrived, cut.latest);
        }
        self.measure(n, now);
        let plan = self.plan(n, buffer, now, next_cut);
        match plan {
            NextRead::Immediate => (plan, self.set(1)),
            // Within an eighth of the mark already set is close enough: no system call.
            NextRead::Gather { low_water, fallback }
                if self.low_water > 1
                    && low_water.abs_diff(self.low_water) <= self.low_water / 8 =>
            {
                (NextRead::Gather { low_water: self.low_water, fallback }, None)
            }
            NextRead::Gather { low_water, .. } => (plan, self.set(low_water)),
        }
    }

    /// Every read is immediate from now on (the socket refused the option, or the kernel
    /// cannot count the connection's RTMP bytes).
    pub fn disable(&mut self) {
        self.max_low_water = 0;
        self.low_water = 1;
    }

    fn set(&mut self, low_water: usize) -> Option<usize> {
        (std::mem::replace(&mut self.low_water, low_water) != low_water).then_some(low_water)
    }

    fn measure(&mut self, n: usize, now: Instant) {
        let start = *self.window_start.get_or_insert(now);
        self.window_bytes += n as u64;
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            let rate = u128::from(self.window_bytes) * 1_000_000 / elapsed.as_micros();
            self.rate = Some(u64::try_from(rate).unwrap_or(u64::MAX));
            self.window_start = Some(now);
            self.window_bytes = 0;
            self.arrivals.next_window();
        }
    }

    /// The wait before the timer's read: until 2 ms ([`CUT_FRAME_MARGIN`]) after the frame
    /// expected to make the next cut is due when that is within [`CUT_SPAN_HALF_PAUSES`],
    /// else until the next tick, at most the longest wait; `None` (read at once) when no
    /// cut is foreseen, the frame is due, or the wait would be shorter than
    /// [`MIN_READ_PAUSE`].
    fn wait(&self, now: Instant, next_cut: Option<NextCut>) -> Option<Duration> {
        let until = self.arrivals.until(now, next_cut?.expected)? + CUT_FRAME_MARGIN;
        let span = self.max_pause * CUT_SPAN_HALF_PAUSES / 2;
        let wait = self.max_wait.min(if until <= span { until } else { self.next_tick(now) });
        (wait >= MIN_READ_PAUSE).then_some(wait)
    }

    /// Time from `now` to the next tick (the instants `max_pause` apart from the one given
    /// at [`Self::new`]), at least [`MIN_READ_PAUSE`] away: the wait away from a cut.
    fn next_tick(&self, now: Instant) -> Duration {
        let period = self.max_pause.as_micros().max(1);
        let since = now.saturating_duration_since(self.ticks).as_micros();
        let mut wait = period - since % period;
        if wait < MIN_READ_PAUSE.as_micros() {
            wait += period;
        }
        Duration::from_micros(u64::try_from(wait).unwrap_or(u64::MAX))
    }

    fn plan(&self, n: usize, buffer: usize, now: Instant, next_cut: Option<NextCut>) -> NextRead {
        // A read that filled the buffer may have left bytes queued (a backlog): keep reading
        // at once. One that did not took everything queued, however much more than the mark
        // (a read woken at it often takes half as much again, a frame that came meanwhile):
        // gathering goes on, in a socket with room for two marks at least
        // ([`MARKS_IN_ROOM`]).
        if n >= buffer {
            return NextRead::Immediate;
        }
        let Some(rate) = self.rate.filter(|_| !self.max_pause.is_zero()) else {
            return NextRead::Immediate;
        };
        let Some(fallback) = self.wait(now, next_cut) else {
            return NextRead::Immediate;
        };
        // The timer makes the read; the mark only guards against a burst filling the socket
        // before it: a pause's worth beyond the bytes expected by then.
        let bytes = u128::from(rate) * (fallback + self.max_pause).as_micros() / 1_000_000;
        let low_water = usize::try_from(bytes).unwrap_or(usize::MAX).min(self.max_low_water);
        if low_water <= 1 {
            return NextRead::Immediate;
        }
        NextRead::Gather { low_water, fallback }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::READ_BUFFER;

    const MS: Duration = Duration::from_millis(1);
    /// The pause the figures below are worked out for.
    const PAUSE: Duration = Duration::from_millis(50);

    /// A low-latency publisher whose frames arrive on time: a frame stamped `ms + shift`
    /// arrives `ms` after `t0`. Its reads bring 315 KB/s over the first second (21 of
    /// 15 KB), 300 KB/s over the next ones: 15,750 and then 15,000 bytes in a pause.
    struct OnTime {
        t0: Instant,
        shift: i64,
    }

    impl OnTime {
        /// The cut as a read at `ms` sees it: the latest frame just arrived, the one
        /// expected to cut comes `expected_in` after it.
        fn cut(&self, ms: u32, expected_in: Duration) -> Option<NextCut> {
            let latest = Duration::from_millis((i64::from(ms) + self.shift).try_into().unwrap());
            Some(NextCut { latest, expected: latest + expected_in })
        }

        /// Reads of 15 KB every 50 ms from `from` to `to` ms, parts far off.
        fn reads(&self, pacer: &mut ReadPacer, from: u32, to: u32) {
            for ms in (from..=to).step_by(50) {
                pacer.after_read(15_000, BUF, self.t0 + ms * MS, self.cut(ms, 200 * MS));
            }
        }

        /// The plan after a read at `ms`, with the frame ending the part `expected_in` on.
        fn read(&self, pacer: &mut ReadPacer, ms: u32, expected_in: Duration) -> NextRead {
            pacer.after_read(15_000, BUF, self.t0 + ms * MS, self.cut(ms, expected_in)).0
        }
    }

    /// A pacer that has read an on-time publisher every 50 ms from 0 to `until` ms.
    fn on_time_pacer(no_media: Duration, until: u32) -> (OnTime, ReadPacer) {
        let on_time = OnTime { t0: Instant::now(), shift: 0 };
        let mut pacer = ReadPacer::new(PAUSE, no_media, on_time.t0);
        on_time.reads(&mut pacer, 0, until);
        (on_time, pacer)
    }

    #[test]
    fn a_part_read_is_timed_to_the_frame_expected_to_end_it() {
        let (on_time, mut pacer) = on_time_pacer(NO_MEDIA, 1050);
        // 33 ms before the frame expected to end the part: the read is timed to it.
        // The mark is a pause beyond it: 85 ms at 315 KB/s.
        let next = on_time.read(&mut pacer, 1100, 33 * MS);
        assert_eq!(next, NextRead::Gather { low_water: 26_775, fallback: 35 * MS });
        // Far from it, the next tick (every 50 ms from `t0`) makes the read.
        let next = on_time.read(&mut pacer, 1150, 250 * MS);
        assert_eq!(next, NextRead::Gather { low_water: 31_500, fallback: 50 * MS });
        // The frame is due and not there (the latest frame is still the one before it):
        // reads are immediate until it comes.
        let late = on_time.cut(1100, 33 * MS);
        let (next, mark) = pacer.after_read(200, BUF, on_time.t0 + 1136 * MS, late);
        assert_eq!((next, mark), (NextRead::Immediate, Some(1)));
    }

    #[test]
    fn a_read_long_after_its_frames_arrived_does_not_make_the_next_expected_later() {
        let (on_time, mut pacer) = on_time_pacer(NO_MEDIA, 1050);
        // A read at 1,140 ms bringing frames up to 1,100 ms (a late read, 40 ms after
        // the latest arrived): the frame 33 ms after that one is due at 1,133 ms, by the
        // earlier reads, so it is due already and reads are immediate.
        let stale = on_time.cut(1100, 33 * MS);
        let (next, _) = pacer.after_read(15_000, BUF, on_time.t0 + 1140 * MS, stale);
        assert_eq!(next, NextRead::Immediate);
        // And it did not move the clock: a read on time is timed as before.
        let next = on_time.read(&mut pacer, 1150, 33 * MS);
        assert_eq!(next, NextRead::Gather { low_water: 26_775, fallback: 35 * MS });
    }

    #[test]
    fn the_clock_remembers_the_window_before() {
        let (on_time, mut pacer) = on_time_pacer(NO_MEDIA, 950);
        // The read that starts the next window comes 40 ms after its latest frame did: by
        // the window before, the frame 33 ms after that one is due already.
        let late = OnTime { t0: on_time.t0, shift: -40 };
        assert_eq!(late.read(&mut pacer, 1040, 33 * MS), NextRead::Immediate);
    }

    /// The pacer and the packager together, as a connection drives them, on real clips
    /// whose tags arrive at their timestamps (as an encoder sends them) into a simulated
    /// socket that wakes the reader at the mark or the timer: every cut is read within
    /// [`CUT_FRAME_MARGIN`] of its frame's arrival, and reads are far fewer than messages.
    #[test]
    fn cuts_are_read_when_their_frames_arrive() {
        use packager::{Container, FragmentOutput, Remuxer, RemuxerConfig, TagKind};
        use testkit::{Clip, clip, flv::read_tags};

        let low_latency = Container::Fmp4 { part_target: Some(Duration::from_millis(250)) };
        // The clip, the container, and the most reads per hundred messages: a 2.5 Mbit/s
        // stream gathers ~62 KB in 200 ms, about 5 reads a second for ~73 messages, plus
        // the reads timed to cuts; 96 kbit/s AAC alone every eight or nine frames, and the
        // reads timed to parts. No message waits longer than one and a half pauses.
        for (clip_name, container, per_hundred) in [
            (Clip::Av720p30, Container::Ts, 16),
            (Clip::Av720p30, low_latency, 20),
            (Clip::AudioOnlyAac, low_latency, 32),
        ] {
            let tags: Vec<_> = read_tags(&clip(clip_name))
                .into_iter()
                .filter_map(|tag| match tag.tag_type {
                    8 => Some((TagKind::Audio, tag)),
                    9 => Some((TagKind::Video, tag)),
                    _ => None,
                })
                .collect();
            let target_duration = Duration::from_secs(2);
            let mut remuxer = Remuxer::new(RemuxerConfig { target_duration, container });
            let t0 = Instant::now();
            let mut pacer = ReadPacer::new(DEFAULT_MAX_READ_PAUSE, NO_MEDIA, t0);
            let arrival = |i: usize| t0 + Duration::from_millis(tags[i].1.timestamp.into());
            // An RTMP message: its payload and a chunk header or so.
            let size = |i: usize| tags[i].1.data.len() + 12;
            let (mut next, mut reads, mut cuts) = (0, 0, 0);
            // Whether the read was the timer's (a tick's or a cut's), not the socket's.
            let mut timed = false;
            // The longest a message waited in the socket: what RTMP players and pushes,
            // which get media as it is read, see at most.
            let mut longest_wait = Duration::ZERO;
            let mut read_at = arrival(0);
            while next < tags.len() {
                let mut n = 0;
                while next < tags.len() && arrival(next) <= read_at {
                    let (kind, tag) = &tags[next];
                    remuxer.push(*kind, tag.timestamp, &tag.data).unwrap();
                    let mut cut = remuxer.pull().is_some();
                    while let Some(output) = remuxer.pull_fmp4() {
                        cut |= matches!(output, FragmentOutput::PartEnd { .. });
                    }
                    if cut {
                        let late = read_at - arrival(next);
                        assert!(late <= CUT_FRAME_MARGIN, "{clip_name:?} {container:?}: {late:?}");
                        cuts += 1;
                    }
                    longest_wait = longest_wait.max(read_at - arrival(next));
                    n += size(next);
                    next += 1;
                }
                reads += 1;
                let (plan, _) = if timed {
                    // The kernel's stamp: when the last message read arrived.
                    let stamp = (n > 0).then(|| arrival(next - 1));
                    pacer.after_read_arrived(n, READ_BUFFER, read_at, stamp, remuxer.next_cut())
                } else {
                    pacer.after_read(n, READ_BUFFER, read_at, remuxer.next_cut())
                };
                if next == tags.len() {
                    break;
                }
                (read_at, timed) = match plan {
                    NextRead::Immediate => (arrival(next), false),
                    NextRead::Gather { low_water, fallback } => {
                        // The kernel wakes the reader once `low_water` bytes are queued.
                        let mut queued = 0;
                        let mut marked = None;
                        for i in next..tags.len() {
                            queued += size(i);
                            if queued >= low_water {
                                marked = Some(arrival(i));
                                break;
                            }
                        }
                        let timer = read_at + fallback;
                        match marked {
                            Some(at) if at < timer => (at, false),
                            _ => (timer, true),
                        }
                    }
                };
            }
            assert!(cuts >= 5, "{clip_name:?} {container:?}: {cuts} cuts");
            // A cut's read comes within one and a half pauses; a tick's within a pause and
            // `MIN_READ_PAUSE`.
            let most = DEFAULT_MAX_READ_PAUSE * CUT_SPAN_HALF_PAUSES / 2;
            assert!(longest_wait <= most, "{clip_name:?} {container:?}: {longest_wait:?}");
            assert!(
                reads * 100 <= tags.len() * per_hundred,
                "{clip_name:?} {container:?}: {reads} reads for {} messages",
                tags.len()
            );
        }
    }

    #[test]
    fn after_a_timestamp_jump_frames_are_expected_early_for_two_windows_at_most() {
        let t0 = Instant::now();
        let mut pacer = ReadPacer::new(PAUSE, NO_MEDIA, t0);
        OnTime { t0, shift: 0 }.reads(&mut pacer, 0, 1050);
        // Timestamps jump 500 ms back: by the old timeline the frame ending the part looks
        // long due, and reads are immediate (early, never late).
        let back = OnTime { t0, shift: -500 };
        assert_eq!(back.read(&mut pacer, 1100, 33 * MS), NextRead::Immediate);
        // Two windows later, the clock follows the new timeline.
        back.reads(&mut pacer, 1150, 3150);
        let next = back.read(&mut pacer, 3200, 33 * MS);
        assert_eq!(next, NextRead::Gather { low_water: 25_500, fallback: 35 * MS });
        // A jump forward is followed at once.
        let ahead = OnTime { t0, shift: 200 };
        let next = ahead.read(&mut pacer, 3250, 33 * MS);
        assert_eq!(next, NextRead::Gather { low_water: 25_500, fallback: 35 * MS });
    }

    /// Reads the timer makes away from a cut fall on ticks every connection shares, so one
    /// wake-up of a thread takes what all its publishers gathered: two publishers read at
    /// different moments plan their next reads for the same instant.
    #[test]
    fn reads_away_from_a_cut_fall_on_shared_ticks() {
        let t0 = Instant::now();
        let (mut one, mut other) = (measured(t0), measured(t0));
        // Ticks every 50 ms from `t0`: the next at 1,050 ms. The mark (300 KB/s) is a pause
        // beyond the tick, so that the tick, not the mark, makes the read.
        let (a, _) = one.after_read(1000, BUF, t0 + 1010 * MS, FAR);
        assert_eq!(a, NextRead::Gather { low_water: 27_000, fallback: 40 * MS });
        let (b, _) = other.after_read_arrived(1000, BUF, t0 + 1033 * MS, None, FAR);
        assert_eq!(b, NextRead::Gather { low_water: 20_100, fallback: 17 * MS });
        // A tick closer than MIN_READ_PAUSE is skipped for the one after.
        let (c, _) = one.after_read_arrived(1000, BUF, t0 + 1048 * MS, None, FAR);
        assert_eq!(c, NextRead::Gather { low_water: 30_600, fallback: 52 * MS });
        // On a tick, the next one is a pause on.
        assert_eq!(one.next_tick(t0 + 1100 * MS), 50 * MS);
    }

    /// A read the timer made brings bytes that gathered over the pause: when it came says
    /// nothing of when frames arrive, so without the kernel's stamp of its last bytes it
    /// does not set the clock (two windows of such reads leave none, and a read before a cut
    /// is then immediate: early, never late). With the stamp it sets it as the socket's do.
    #[test]
    fn reads_on_the_timer_set_the_clock_only_by_their_arrival_stamps() {
        let (on_time, mut pacer) = on_time_pacer(NO_MEDIA, 1050);
        // From 1,100 ms, the timer's reads without stamps, 40 ms after their latest frame
        // came; the rate windows roll at 2 and 3 s.
        let stale = OnTime { t0: on_time.t0, shift: -40 };
        for ms in (1100..=2950).step_by(50) {
            let at = on_time.t0 + ms * MS;
            let (next, _) =
                pacer.after_read_arrived(15_000, BUF, at, None, stale.cut(ms, 200 * MS));
            assert!(matches!(next, NextRead::Gather { .. }), "{ms}: {next:?}");
        }
        let at = on_time.t0 + 3000 * MS;
        let (next, _) = pacer.after_read_arrived(15_000, BUF, at, None, stale.cut(3000, 33 * MS));
        assert_eq!(next, NextRead::Immediate);
        // A read at 3,050 ms whose last bytes, the frame stamped 3,010 ms, arrived at 3,010
        // ms: the frame 60 ms after that one is due at 3,070 ms, read 2 ms after.
        let (at, stamp) = (on_time.t0 + 3050 * MS, Some(on_time.t0 + 3010 * MS));
        let (next, _) =
            pacer.after_read_arrived(15_000, BUF, at, stamp, on_time.cut(3010, 60 * MS));
        assert!(
            matches!(next, NextRead::Gather { fallback, .. } if fallback == 22 * MS),
            "{next:?}"
        );
    }

    /// A pacer that has measured 300 KB/s (2.4 Mbit/s) over one window, starting at `t0`.
    fn measured(t0: Instant) -> ReadPacer {
        let mut pacer = ReadPacer::new(PAUSE, NO_MEDIA, t0);
        assert_eq!(pacer.after_read(1000, BUF, t0, FAR), (NextRead::Immediate, None));
        let (next, mark) = pacer.after_read(299_000, 299_000, t0 + Duration::from_secs(1), FAR);
        // That read was a backlog (it filled the buffer): immediate, whatever the rate.
        assert_eq!((next, mark), (NextRead::Immediate, None));
        pacer
    }

    const BUF: usize = 1 << 20;
    const NO_MEDIA: Duration = Duration::from_secs(15);
    /// No cut for an hour.
    const FAR: Option<NextCut> =
        Some(NextCut { latest: Duration::ZERO, expected: Duration::from_secs(3600) });

    #[test]
    fn reads_at_once_until_a_rate_is_measured() {
        let t0 = Instant::now();
        let mut pacer = ReadPacer::new(PAUSE, NO_MEDIA, t0);
        for i in 0..10 {
            let at = t0 + i * 90 * MS;
            assert_eq!(pacer.after_read(1000, BUF, at, FAR), (NextRead::Immediate, None));
        }
        assert_eq!(pacer.low_water(), 1);
    }

    #[test]
    fn gathers_a_pause_worth_of_the_measured_rate() {
        let t0 = Instant::now();
        let mut pacer = measured(t0);
        let at = t0 + 1010 * MS;
        let (next, mark) = pacer.after_read(1000, BUF, at, FAR);
        // While the cut is far, the next tick (1,050 ms) makes the read; the mark is 300
        // KB/s over the 40 ms to it and a pause beyond.
        assert_eq!(next, NextRead::Gather { low_water: 27_000, fallback: 40 * MS });
        assert_eq!(mark, Some(27_000));
        assert_eq!(pacer.low_water(), 27_000);
        // The same plan again sets nothing; nor does a rate within an eighth of it.
        assert_eq!(pacer.after_read(15_000, BUF, at + 50 * MS, FAR).1, None);
        // A cut expected 60 ms on (its frame due 1,170 ms after the first read, whose
        // frames' timestamps start at zero), within one and a half pauses: the next read
        // comes 2 ms after it is due, not at the tick before.
        let cut = NextCut { latest: 1110 * MS, expected: 1170 * MS };
        let (next, mark) = pacer.after_read(15_000, BUF, at + 100 * MS, Some(cut));
        assert_eq!(
            (next, mark),
            (NextRead::Gather { low_water: 33_600, fallback: 62 * MS }, Some(33_600))
        );
    }

    #[test]
    fn mark_follows_the_rate_but_not_its_small_changes() {
        let t0 = Instant::now();
        let mut pacer = measured(t0);
        // Reads every 50 ms for a window each: 320 KB/s (within an eighth of the 300 KB/s
        // measured: the mark stays), then 200 KB/s (the mark moves).
        let mut marks = Vec::new();
        for (window, bytes) in [(1, 16_000), (2, 10_000)] {
            for i in 1..=20 {
                let at = t0 + window * Duration::from_secs(1) + i * 50 * MS;
                let (next, mark) = pacer.after_read(bytes, BUF, at, FAR);
                assert!(matches!(next, NextRead::Gather { .. }));
                marks.extend(mark);
            }
        }
        assert_eq!(marks, [30_000, 20_000]);
    }

    /// A read the highest mark woke, with a few more KiB that arrived before it, on the
    /// 256 KiB read buffer: not a backlog, the mark stays (flipping it to 1 and back cost two
    /// system calls and a wake-up per read).
    #[test]
    fn a_read_woken_at_the_highest_mark_keeps_gathering() {
        let t0 = Instant::now();
        let mut pacer = ReadPacer::new(PAUSE, NO_MEDIA, t0);
        pacer.after_read(10, READ_BUFFER, t0, FAR);
        // 1.6 MB/s (12.8 Mbit/s): 144 KB to the tick and a pause beyond, capped at
        // MAX_LOW_WATER.
        pacer.after_read(1_600_000, 4 << 20, t0 + Duration::from_secs(1), FAR);
        for (i, n) in [MAX_LOW_WATER, MAX_LOW_WATER + 6_000].into_iter().enumerate() {
            let at = t0 + Duration::from_secs(1) + (10 + 50 * i as u32) * MS;
            let (next, _) = pacer.after_read(n, READ_BUFFER, at, FAR);
            assert!(matches!(next, NextRead::Gather { .. }), "{n}: {next:?}");
        }
        assert_eq!(pacer.low_water(), MAX_LOW_WATER);
    }

    #[test]
    fn mark_is_capped_by_the_read_buffer_and_the_room() {
        let t0 = Instant::now();
        let mut pacer = ReadPacer::new(PAUSE, NO_MEDIA, t0);
        pacer.after_read(10, BUF, t0, FAR);
        // 4 MB/s: 200 KB in a pause, capped at MAX_LOW_WATER.
        pacer.after_read(4_000_000, 4 << 20, t0 + Duration::from_secs(1), FAR);
        let (next, _) = pacer.after_read(10, BUF, t0 + 1010 * MS, FAR);
        assert_eq!(next, NextRead::Gather { low_water: MAX_LOW_WATER, fallback: 40 * MS });

        // The kernel made less room than asked (an old kernel, a small `tcp_rmem` maximum),
        // as the connection learns at the first mark: that mark and those after it stay
        // within half of it.
        let mut small = ReadPacer::new(PAUSE, NO_MEDIA, t0);
        small.after_read(10, BUF, t0, FAR);
        let (_, first) = small.after_read(4_000_000, 4 << 20, t0 + Duration::from_secs(1), FAR);
        assert_eq!(first, Some(MAX_LOW_WATER));
        let share = (64 << 10) / MARKS_IN_ROOM;
        assert_eq!(small.set_room(64 << 10), share);
        assert_eq!(small.low_water(), share);
        let (next, _) = small.after_read(10, BUF, t0 + 1060 * MS, FAR);
        assert_eq!(next, NextRead::Gather { low_water: share, fallback: 40 * MS });
        // No room to speak of: the mark goes back to 1 and reads are immediate.
        assert_eq!(small.set_room(1), 1);
        let (next, _) = small.after_read(10, BUF, t0 + 1110 * MS, FAR);
        assert_eq!(next, NextRead::Immediate);
    }

    /// Only a read that filled the buffer is a backlog: one byte short, gathering goes on.
    #[test]
    fn a_read_short_of_a_full_buffer_keeps_gathering() {
        let t0 = Instant::now();
        let mut pacer = measured(t0);
        assert_eq!(pacer.after_read(1000, BUF, t0 + 1010 * MS, FAR).1, Some(27_000));
        let (next, mark) = pacer.after_read(BUF - 1, BUF, t0 + 1060 * MS, FAR);
        assert!(matches!(next, NextRead::Gather { .. }), "{next:?}");
        assert_eq!(mark, None);
        assert_eq!(pacer.after_read(BUF, BUF, t0 + 1070 * MS, FAR), (NextRead::Immediate, Some(1)));
    }

    #[test]
    fn near_the_cut_a_backlog_or_no_segment_reads_at_once_and_lowers_the_mark() {
        let t0 = Instant::now();
        let backlog = BUF;
        // A frame that could cut due now (the first read's timestamps start at zero).
        let due = NextCut { latest: 1060 * MS, expected: 1060 * MS };
        for (n, next_cut) in [(1000, Some(due)), (backlog, FAR), (1000, None)] {
            let mut pacer = measured(t0);
            assert_eq!(pacer.after_read(1000, BUF, t0 + 1010 * MS, FAR).1, Some(27_000));
            let (next, mark) = pacer.after_read(n, BUF, t0 + 1060 * MS, next_cut);
            assert_eq!((next, mark), (NextRead::Immediate, Some(1)), "{n} {next_cut:?}");
        }
    }

    /// The timer's read finds nothing queued (the connection plans again as after a read of
    /// no bytes): when the cut's frame is due, reads turn immediate until it comes; away
    /// from a cut, the next tick; and never past a quarter of the no-media timeout.
    #[test]
    fn a_timed_read_that_finds_nothing_plans_again() {
        let (on_time, mut pacer) = on_time_pacer(100 * MS, 1050);
        // Timed for a cut at 1,133 ms: at 1,135 ms its frame is not there.
        let at = on_time.t0 + 1135 * MS;
        let (next, mark) = pacer.after_read_arrived(0, BUF, at, None, on_time.cut(1100, 33 * MS));
        assert_eq!((next, mark), (NextRead::Immediate, Some(1)));
        // A tick with nothing queued and the cut far: the next tick, within 25 ms.
        let at = on_time.t0 + 1200 * MS;
        let (next, _) = pacer.after_read_arrived(0, BUF, at, None, on_time.cut(1190, 250 * MS));
        assert!(matches!(next, NextRead::Gather { fallback, .. } if fallback == 25 * MS));
    }

    #[test]
    fn fallback_comes_well_before_the_no_media_timeout() {
        let t0 = Instant::now();
        // A quarter of a 100 ms no-media timeout comes before the tick 40 ms on.
        let mut pacer = ReadPacer::new(PAUSE, 100 * MS, t0);
        pacer.after_read(1000, BUF, t0, FAR);
        pacer.after_read(299_000, 350_000, t0 + Duration::from_secs(1), FAR);
        let (next, _) = pacer.after_read(1000, BUF, t0 + 1010 * MS, FAR);
        assert_eq!(next, NextRead::Gather { low_water: 22_500, fallback: 25 * MS });
    }

    #[test]
    fn a_slow_stream_gathers_less_and_zero_pause_or_refused_option_never_gathers() {
        let t0 = Instant::now();
        // 8 KB/s (64 kbit/s audio): 800 bytes, the mark set at 1,000 ms for the tick 50 ms
        // on and a pause beyond (720 at 1,010 ms is within an eighth of it).
        let mut pacer = ReadPacer::new(PAUSE, NO_MEDIA, t0);
        pacer.after_read(0, BUF, t0, FAR);
        pacer.after_read(8000, BUF, t0 + Duration::from_secs(1), FAR);
        let (next, _) = pacer.after_read(100, BUF, t0 + 1010 * MS, FAR);
        assert_eq!(next, NextRead::Gather { low_water: 800, fallback: 40 * MS });

        let mut off = ReadPacer::new(Duration::ZERO, NO_MEDIA, t0);
        off.after_read(0, BUF, t0, FAR);
        off.after_read(8000, BUF, t0 + Duration::from_secs(1), FAR);
        assert_eq!(off.after_read(100, BUF, t0 + 1010 * MS, FAR), (NextRead::Immediate, None));

        pacer.disable();
        assert_eq!(pacer.low_water(), 1);
        let (next, mark) = pacer.after_read(100, BUF, t0 + 1020 * MS, FAR);
        assert_eq!((next, mark), (NextRead::Immediate, None));
    }
}
