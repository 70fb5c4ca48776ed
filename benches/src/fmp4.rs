//! What a low-latency viewer reads from fragmented MP4 (ISO/IEC 14496-12): the tracks of an
//! init segment (`moov/trak`: id from `tkhd`, timescale from `mdhd`, handler from `hdlr`;
//! default sample duration from `mvex/trex`), and the decode time of a track's last sample
//! in a part's fragments (`moof/traf`: `tfhd`, `tfdt`, `trun`). Nothing is decoded; sizes are
//! checked against the bytes there, so a truncated or lying box is an error, never a panic.

use std::time::Duration;

/// `tfhd` flags (§8.8.7.1): fields present before default-sample-duration.
const TFHD_BASE_DATA_OFFSET: u32 = 0x01;
const TFHD_SAMPLE_DESCRIPTION_INDEX: u32 = 0x02;
const TFHD_DEFAULT_SAMPLE_DURATION: u32 = 0x08;
/// `trun` flags (§8.8.8.1): optional fields before the samples, then per-sample fields.
const TRUN_DATA_OFFSET: u32 = 0x01;
const TRUN_FIRST_SAMPLE_FLAGS: u32 = 0x04;
const TRUN_SAMPLE_DURATION: u32 = 0x100;
const TRUN_PER_SAMPLE_FIELDS: u32 = 0xf00;

/// Boxes that do not fit where they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// One track of an init segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Track {
    pub(crate) id: u32,
    /// Handler type `vide`.
    pub(crate) video: bool,
    /// Ticks per second of its decode times.
    pub(crate) timescale: u32,
    /// `trex` default-sample-duration, for fragments that give none.
    pub(crate) default_duration: Option<u32>,
}

/// Whether `body` starts with a `moof` box, as every CMAF fragment does.
pub(crate) fn starts_with_moof(body: &[u8]) -> bool {
    body.get(4..8) == Some(b"moof")
}

/// The tracks of an init segment; `None` if it holds no `moov` with readable tracks.
pub(crate) fn init_tracks(init: &[u8]) -> Option<Vec<Track>> {
    let moov = child(init, b"moov")?;
    let mut tracks = Vec::new();
    for item in boxes(moov) {
        let (kind, trak) = item.ok()?;
        if kind != *b"trak" {
            continue;
        }
        let mut tkhd = Reader(child(trak, b"tkhd")?);
        let version = tkhd.full_box()?.0;
        tkhd.skip(if version == 1 { 16 } else { 8 })?; // creation, modification time
        let id = tkhd.u32()?;
        let mdia = child(trak, b"mdia")?;
        let mut mdhd = Reader(child(mdia, b"mdhd")?);
        let version = mdhd.full_box()?.0;
        mdhd.skip(if version == 1 { 16 } else { 8 })?;
        let timescale = mdhd.u32()?;
        let mut hdlr = Reader(child(mdia, b"hdlr")?);
        hdlr.full_box()?;
        hdlr.skip(4)?; // pre_defined
        let handler = hdlr.bytes(4)?;
        if timescale == 0 {
            return None;
        }
        tracks.push(Track { id, video: handler == b"vide", timescale, default_duration: None });
    }
    if let Some(mvex) = child(moov, b"mvex") {
        for item in boxes(mvex) {
            let (kind, trex) = item.ok()?;
            if kind != *b"trex" {
                continue;
            }
            let mut trex = Reader(trex);
            trex.full_box()?;
            let id = trex.u32()?;
            trex.skip(4)?; // default_sample_description_index
            let duration = trex.u32()?;
            if let Some(track) = tracks.iter_mut().find(|t| t.id == id) {
                track.default_duration = Some(duration);
            }
        }
    }
    (!tracks.is_empty()).then_some(tracks)
}

/// Decode time, in `track`'s ticks, of its last sample in `fragments` (`moof` + `mdat`
/// pairs): the last `tfdt` plus the durations of every sample of that `traf` but the last,
/// each from `trun` (flag 0x100), else `tfhd`'s default (flag 0x08), else `trex`'s.
/// `Ok(None)`: the fragments hold no sample of the track, or a duration needed is given
/// nowhere, or the track's last `traf` has no `tfdt`.
pub(crate) fn last_decode_time(fragments: &[u8], track: &Track) -> Result<Option<u64>, Malformed> {
    let mut last = None;
    for item in boxes(fragments) {
        let (kind, moof) = item?;
        if kind != *b"moof" {
            continue;
        }
        for item in boxes(moof) {
            let (kind, traf) = item?;
            if kind == *b"traf"
                && let Some(time) = traf_last_decode_time(traf, track)?
            {
                last = Some(time);
            }
        }
    }
    Ok(last.flatten())
}

/// The last sample's decode time of a `traf` of `track`: `None` when the `traf` is another
/// track's or has no sample, `Some(None)` when it cannot be known.
fn traf_last_decode_time(traf: &[u8], track: &Track) -> Result<Option<Option<u64>>, Malformed> {
    let mut tfhd = Reader(child(traf, b"tfhd").ok_or(Malformed)?);
    let flags = tfhd.full_box().ok_or(Malformed)?.1;
    if tfhd.u32().ok_or(Malformed)? != track.id {
        return Ok(None);
    }
    if flags & TFHD_BASE_DATA_OFFSET != 0 {
        tfhd.skip(8).ok_or(Malformed)?;
    }
    if flags & TFHD_SAMPLE_DESCRIPTION_INDEX != 0 {
        tfhd.skip(4).ok_or(Malformed)?;
    }
    let default_duration = if flags & TFHD_DEFAULT_SAMPLE_DURATION != 0 {
        Some(tfhd.u32().ok_or(Malformed)?)
    } else {
        track.default_duration
    };
    let base = match child(traf, b"tfdt") {
        Some(tfdt) => {
            let mut tfdt = Reader(tfdt);
            let version = tfdt.full_box().ok_or(Malformed)?.0;
            Some(
                if version == 1 { tfdt.u64() } else { tfdt.u32().map(u64::from) }
                    .ok_or(Malformed)?,
            )
        }
        None => None,
    };
    // Decode time of the next sample, and of the last one seen.
    let mut next = base;
    let mut last = None;
    let mut samples = 0u64;
    for item in boxes(traf) {
        let (kind, trun) = item?;
        if kind != *b"trun" {
            continue;
        }
        let mut trun = Reader(trun);
        let flags = trun.full_box().ok_or(Malformed)?.1;
        let count = trun.u32().ok_or(Malformed)?;
        if flags & TRUN_DATA_OFFSET != 0 {
            trun.skip(4).ok_or(Malformed)?;
        }
        if flags & TRUN_FIRST_SAMPLE_FLAGS != 0 {
            trun.skip(4).ok_or(Malformed)?;
        }
        let per_sample = 4 * (flags & TRUN_PER_SAMPLE_FIELDS).count_ones() as usize;
        if count == 0 {
            continue;
        }
        samples += u64::from(count);
        if per_sample == 0 {
            // Every sample takes the default duration: no loop over a count a server chose.
            let start = next;
            next = match (start, default_duration) {
                (Some(at), Some(d)) => {
                    Some(at.checked_add(u64::from(d) * u64::from(count)).ok_or(Malformed)?)
                }
                _ => None,
            };
            last = match (start, default_duration) {
                (Some(at), _) if count == 1 => Some(at),
                (Some(at), Some(d)) => Some(at + u64::from(d) * u64::from(count - 1)),
                _ => None,
            };
            continue;
        }
        if trun.0.len() / per_sample < count as usize {
            return Err(Malformed);
        }
        for _ in 0..count {
            let duration = if flags & TRUN_SAMPLE_DURATION != 0 {
                let duration = trun.u32().ok_or(Malformed)?;
                trun.skip(per_sample - 4).ok_or(Malformed)?;
                Some(duration)
            } else {
                trun.skip(per_sample).ok_or(Malformed)?;
                default_duration
            };
            last = next;
            next = match (next, duration) {
                (Some(at), Some(d)) => Some(at.checked_add(u64::from(d)).ok_or(Malformed)?),
                _ => None,
            };
        }
    }
    Ok((samples > 0).then_some(last))
}

/// `ticks` of a track of `timescale` as a duration (microsecond resolution).
pub(crate) fn ticks_to_duration(ticks: u64, timescale: u32) -> Duration {
    let micros = u128::from(ticks) * 1_000_000 / u128::from(timescale.max(1));
    Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
}

/// The boxes in `data`, in order; an item is an error, and the last, where a box does not
/// fit.
fn boxes(mut data: &[u8]) -> impl Iterator<Item = Result<([u8; 4], &[u8]), Malformed>> {
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        match split_box(data) {
            Some((kind, payload, rest)) => {
                data = rest;
                Some(Ok((kind, payload)))
            }
            None => {
                data = &[];
                Some(Err(Malformed))
            }
        }
    })
}

/// The first box of `data`: its type, its payload and the bytes after it.
fn split_box(data: &[u8]) -> Option<([u8; 4], &[u8], &[u8])> {
    let mut header = Reader(data);
    let size = header.u32()?;
    let kind: [u8; 4] = header.bytes(4)?.try_into().ok()?;
    let (header_len, size) = match size {
        // To the end of the enclosing data.
        0 => (8, data.len() as u64),
        // A 64-bit size follows the type.
        1 => (16, header.u64()?),
        size => (8, u64::from(size)),
    };
    let size = usize::try_from(size).ok()?;
    if size < header_len || size > data.len() {
        return None;
    }
    Some((kind, &data[header_len..size], &data[size..]))
}

/// The payload of the first `kind` box in `data`.
fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(data).map_while(Result::ok).find(|(k, _)| k == kind).map(|(_, payload)| payload)
}

/// Big-endian fields from the front of a box's payload.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.bytes(n).map(|_| ())
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.bytes(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.bytes(8)?.try_into().ok()?))
    }

    /// A full box's version and flags.
    fn full_box(&mut self) -> Option<(u8, u32)> {
        let word = self.u32()?;
        Some(((word >> 24) as u8, word & 0x00ff_ffff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(payload.len() + 8).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(payload);
        out
    }

    fn full(kind: &[u8; 4], version: u8, flags: u32, fields: &[u8]) -> Vec<u8> {
        let mut payload = (u32::from(version) << 24 | flags).to_be_bytes().to_vec();
        payload.extend_from_slice(fields);
        boxed(kind, &payload)
    }

    fn words(values: &[u32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_be_bytes()).collect()
    }

    /// A `trak` of version-`version` `tkhd` and `mdhd`.
    fn trak(version: u8, id: u32, timescale: u32, handler: &[u8; 4]) -> Vec<u8> {
        let times = if version == 1 { 16 } else { 8 };
        let mut tkhd = vec![0; times];
        tkhd.extend(words(&[id, 0, 0]));
        let mut mdhd = vec![0; times];
        mdhd.extend(words(&[timescale, 0]));
        let mut hdlr = words(&[0]);
        hdlr.extend_from_slice(handler);
        hdlr.extend([0; 13]);
        let mdia =
            [full(b"mdhd", version, 0, &mdhd), full(b"hdlr", 0, 0, &hdlr), boxed(b"minf", &[])]
                .concat();
        boxed(b"trak", &[full(b"tkhd", version, 7, &tkhd), boxed(b"mdia", &mdia)].concat())
    }

    fn init(traks: &[Vec<u8>], trex: &[(u32, u32)]) -> Vec<u8> {
        let mvex: Vec<u8> = trex
            .iter()
            .flat_map(|&(id, d)| full(b"trex", 0, 0, &words(&[id, 1, d, 0, 0])))
            .collect();
        let moov = [full(b"mvhd", 0, 0, &[0; 96]), traks.concat(), boxed(b"mvex", &mvex)].concat();
        [boxed(b"ftyp", b"iso6\0\0\0\0"), boxed(b"moov", &moov)].concat()
    }

    /// A `traf` of `track` with `tfhd` `flags` and `fields`, a version-1 `tfdt`, and a `trun`
    /// of `samples` (duration, size) with `trun_flags`.
    fn traf(
        track: u32,
        tfhd: (u32, &[u32]),
        tfdt: u64,
        trun_flags: u32,
        samples: &[(u32, u32)],
    ) -> Vec<u8> {
        let mut tfhd_fields = words(&[track]);
        tfhd_fields.extend(words(tfhd.1));
        let mut trun = words(&[u32::try_from(samples.len()).unwrap(), 0]);
        for &(duration, size) in samples {
            if trun_flags & TRUN_SAMPLE_DURATION != 0 {
                trun.extend(words(&[duration]));
            }
            trun.extend(words(&[size]));
        }
        let body = [
            full(b"tfhd", 0, tfhd.0, &tfhd_fields),
            full(b"tfdt", 1, 0, &tfdt.to_be_bytes()),
            full(b"trun", 0, trun_flags | TRUN_DATA_OFFSET | 0x200, &trun),
        ]
        .concat();
        boxed(b"traf", &body)
    }

    fn fragment(trafs: &[Vec<u8>]) -> Vec<u8> {
        let moof = [full(b"mfhd", 0, 0, &words(&[1])), trafs.concat()].concat();
        [boxed(b"moof", &moof), boxed(b"mdat", &[0; 10])].concat()
    }

    const VIDEO: Track = Track { id: 1, video: true, timescale: 90_000, default_duration: None };

    #[test]
    fn init_segment_tracks_come_from_tkhd_mdhd_hdlr_and_trex() {
        let data = init(&[trak(0, 1, 90_000, b"vide"), trak(1, 2, 48_000, b"soun")], &[(2, 1024)]);
        assert_eq!(
            init_tracks(&data).unwrap(),
            [VIDEO, Track { id: 2, video: false, timescale: 48_000, default_duration: Some(1024) }]
        );
        assert_eq!(init_tracks(b"not mp4"), None);
        assert_eq!(init_tracks(&data[..data.len() - 3]), None, "truncated");
    }

    #[test]
    fn the_last_sample_time_adds_every_duration_but_the_last_per_sample() {
        // Video frames of 3000 ticks (30 fps); the audio traf in between is not the track.
        let audio = traf(2, (0, &[]), 7, TRUN_SAMPLE_DURATION, &[(1024, 9)]);
        let first = fragment(&[
            traf(1, (0, &[]), 90_000, TRUN_SAMPLE_DURATION, &[(3000, 5), (3000, 5), (3003, 5)]),
            audio.clone(),
        ]);
        assert_eq!(last_decode_time(&first, &VIDEO), Ok(Some(96_000)));
        // The last fragment of the part decides; its last duration (unknown: 0) is not used.
        let second = fragment(&[traf(1, (0, &[]), 99_003, TRUN_SAMPLE_DURATION, &[(0, 5)])]);
        assert_eq!(last_decode_time(&[first.clone(), second].concat(), &VIDEO), Ok(Some(99_003)));
        // Only audio: nothing to time.
        assert_eq!(last_decode_time(&fragment(&[audio]), &VIDEO), Ok(None));
        assert!(starts_with_moof(&first));
        assert!(!starts_with_moof(&[0x47; 188]));
    }

    #[test]
    fn durations_fall_back_to_tfhd_then_trex_defaults() {
        // tfhd default-sample-duration after sample-description-index.
        let flags = TFHD_SAMPLE_DESCRIPTION_INDEX | TFHD_DEFAULT_SAMPLE_DURATION;
        let data = fragment(&[traf(1, (flags, &[1, 3000]), 1000, 0, &[(0, 5); 4])]);
        assert_eq!(last_decode_time(&data, &VIDEO), Ok(Some(10_000)));
        // No duration anywhere: one sample is still timed, several are not.
        let one = fragment(&[traf(1, (0, &[]), 1000, 0, &[(0, 5)])]);
        assert_eq!(last_decode_time(&one, &VIDEO), Ok(Some(1000)));
        let three = fragment(&[traf(1, (0, &[]), 1000, 0, &[(0, 5); 3])]);
        assert_eq!(last_decode_time(&three, &VIDEO), Ok(None));
        let with_trex = Track { default_duration: Some(1500), ..VIDEO };
        assert_eq!(last_decode_time(&three, &with_trex), Ok(Some(4000)));
    }

    #[test]
    fn truncated_or_oversized_boxes_are_malformed() {
        let data = fragment(&[traf(1, (0, &[]), 5, TRUN_SAMPLE_DURATION, &[(10, 5), (10, 5)])]);
        assert_eq!(last_decode_time(&data[..data.len() - 1], &VIDEO), Err(Malformed));
        // A moof whose trun claims more samples than it holds.
        let mut lying = data.clone();
        let count_at = lying.windows(4).position(|w| w == b"trun").unwrap() + 8;
        lying[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(last_decode_time(&lying, &VIDEO), Err(Malformed));
        // A 64-bit box size (size field 1) is read.
        let mut large = 1u32.to_be_bytes().to_vec();
        large.extend_from_slice(b"free");
        large.extend(20u64.to_be_bytes());
        large.extend([0; 4]);
        assert_eq!(last_decode_time(&[large, data].concat(), &VIDEO), Ok(Some(15)));
    }

    /// What the server sends: the packager's low-latency parts of a real clip, published
    /// 100 s into its timeline so a rebase would show.
    #[test]
    fn the_packagers_parts_carry_the_publishers_timestamps() {
        use packager::{Container, FragmentOutput, Remuxer, RemuxerConfig, TagKind};
        const OFFSET_MS: u32 = 100_000;
        let container = Container::Fmp4 { part_target: Some(Duration::from_millis(250)) };
        let mut remuxer = Remuxer::new(RemuxerConfig { container, ..RemuxerConfig::default() });
        let mut video_ms = std::collections::BTreeSet::new();
        let (mut video, mut part, mut timed) = (None, Vec::new(), Vec::new());
        for tag in testkit::flv::media_tags(&testkit::clip(testkit::Clip::AvSmall)) {
            let kind = if tag.tag_type == 9 { TagKind::Video } else { TagKind::Audio };
            if kind == TagKind::Video {
                video_ms.insert(u64::from(tag.timestamp + OFFSET_MS));
            }
            remuxer.push(kind, tag.timestamp + OFFSET_MS, &tag.data).unwrap();
            while let Some(output) = remuxer.pull_fmp4() {
                match output {
                    FragmentOutput::Init(init) => {
                        video = init_tracks(&init).unwrap().into_iter().find(|t| t.video);
                    }
                    FragmentOutput::Fragment(fragment) => part.extend_from_slice(&fragment),
                    FragmentOutput::PartEnd { .. } => {
                        assert!(starts_with_moof(&part));
                        let track = video.unwrap();
                        assert_eq!((track.id, track.timescale), (1, 90_000));
                        let ticks = last_decode_time(&part, &track).unwrap().unwrap();
                        timed.push(ticks_to_duration(ticks, track.timescale).as_millis());
                        part.clear();
                    }
                    _ => {}
                }
            }
        }
        assert!(timed.len() > 10, "{} parts", timed.len());
        assert!(timed.windows(2).all(|w| w[0] < w[1]), "{timed:?}");
        for ms in &timed {
            assert!(video_ms.contains(&u64::try_from(*ms).unwrap()), "{ms} ms is no frame's");
        }
    }

    #[test]
    fn ticks_become_durations() {
        assert_eq!(ticks_to_duration(90_000 * 61 + 90, 90_000), Duration::from_millis(61_001));
        assert_eq!(ticks_to_duration(48_000, 48_000), Duration::from_secs(1));
    }
}
