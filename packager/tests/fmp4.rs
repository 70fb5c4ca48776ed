//! Fragmented MP4 from real encoder output, judged by two independent MP4 readers (Mozilla's
//! `mp4parse`, what Firefox uses, on init segments; `mp4-atom` on init segments and every
//! fragment) and by ffmpeg decoding the whole stream: track setup, continuous decode times,
//! keyframe flags, part and segment cuts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Cursor;
use std::time::Duration;

use bytes::Bytes;
use mp4_atom::{Codec, Decode as _, Ftyp, Mdat, Moof, Moov};
use packager::{Container, FragmentOutput, Remuxer, RemuxerConfig, TagKind};
use testkit::{Clip, clip, tools};

const PART: Duration = Duration::from_millis(333);

/// The clip's media tags through a remuxer making fMP4 with `part_target`.
fn remux(which: Clip, part_target: Option<Duration>) -> Vec<FragmentOutput> {
    let tags = testkit::flv::media_tags(&clip(which));
    remux_tags(tags.iter().map(|tag| (tag, tag.timestamp)), part_target)
}

/// `tags`, each at the timestamp given with it, through a remuxer making fMP4 with
/// `part_target` (2 s segments), then finished.
fn remux_tags<'a>(
    tags: impl IntoIterator<Item = (&'a testkit::flv::Tag, u32)>,
    part_target: Option<Duration>,
) -> Vec<FragmentOutput> {
    let config = RemuxerConfig {
        target_duration: Duration::from_secs(2),
        container: Container::Fmp4 { part_target },
    };
    let mut remuxer = Remuxer::new(config);
    let mut outputs = Vec::new();
    for (tag, timestamp) in tags {
        let kind = if tag.tag_type == 9 { TagKind::Video } else { TagKind::Audio };
        let _ = remuxer.push(kind, timestamp, &tag.data);
        outputs.extend(std::iter::from_fn(|| remuxer.pull_fmp4()));
    }
    remuxer.finish();
    outputs.extend(std::iter::from_fn(|| remuxer.pull_fmp4()));
    outputs
}

/// What one track's samples looked like across fragments.
#[derive(Debug, Default)]
struct TrackRun {
    next_decode_time: Option<u64>,
    samples: usize,
    sync: usize,
}

/// Checks every output with the independent readers; returns the stream as a file's bytes
/// (init segment, then every fragment) and the tracks' sample counts.
fn check(outputs: &[FragmentOutput], part_target: Option<Duration>) -> (Vec<u8>, Vec<usize>) {
    let mut file = Vec::new();
    let mut runs: std::collections::HashMap<u32, TrackRun> = std::collections::HashMap::new();
    let mut part_open = false;
    let mut segment_open = false;
    let mut parts = 0;
    let mut segments = 0;
    // The part target the segments announce, and the last part's duration (the stream's
    // last part also holds the audio after the last video frame: checked once another
    // follows).
    let (mut announced, mut last_part) = (None, None);
    for output in outputs {
        match output {
            FragmentOutput::Init(init) => {
                // A clip without changes: a second init segment only replaces the first
                // before any fragment (an MP3 track announced by its first frame).
                let replaced = file.len();
                assert!(runs.values().all(|r| r.samples == 0), "a second init segment");
                file.truncate(file.len() - replaced);
                let context = mp4parse::read_mp4(&mut Cursor::new(&init[..]))
                    .expect("mp4parse reads the init segment");
                assert!(!context.tracks.is_empty());
                let mut reader = Cursor::new(&init[..]);
                let ftyp = Ftyp::decode(&mut reader).expect("an ftyp");
                assert_eq!(ftyp.major_brand, b"iso6".into());
                let moov = Moov::decode(&mut reader).expect("a moov");
                assert_eq!(moov.trak.len(), context.tracks.len());
                assert_eq!(moov.mvex.as_ref().map(|m| m.trex.len()), Some(moov.trak.len()));
                for trak in &moov.trak {
                    match &trak.mdia.minf.stbl.stsd.codecs[..] {
                        [Codec::Avc1(avc1)] => {
                            assert!(avc1.visual.width > 0 && avc1.visual.height > 0);
                        }
                        [Codec::Mp4a(_)] => {}
                        other => panic!("unexpected sample entries {other:?}"),
                    }
                }
                runs = moov.trak.iter().map(|t| (t.tkhd.track_id, TrackRun::default())).collect();
                file.extend_from_slice(init);
            }
            FragmentOutput::Fragment(fragment) => {
                let mut reader = Cursor::new(&fragment[..]);
                let moof = Moof::decode(&mut reader).expect("a moof");
                let mdat = Mdat::decode(&mut reader).expect("an mdat");
                assert_eq!(reader.position() as usize, fragment.len(), "bytes after the mdat");
                let mut payload = 0;
                for traf in &moof.traf {
                    let track = traf.tfhd.track_id;
                    let run = runs.get_mut(&track).expect("a track of the init segment");
                    let base = traf.tfdt.as_ref().expect("a tfdt").base_media_decode_time;
                    if let Some(expected) = run.next_decode_time {
                        assert_eq!(base, expected, "track {track}: tfdt is not continuous");
                    }
                    let mut time = base;
                    for trun in &traf.trun {
                        for sample in trun.samples.iter() {
                            time += u64::from(sample.duration.expect("a sample duration"));
                            payload += sample.size.expect("a sample size") as usize;
                            run.samples += 1;
                            if sample.flags.expect("sample flags") & 0x0001_0000 == 0 {
                                run.sync += 1;
                            }
                        }
                    }
                    run.next_decode_time = Some(time);
                }
                assert_eq!(mdat.data.len(), payload, "mdat holds exactly the samples");
                assert!(segment_open, "a fragment outside a segment");
                part_open = true;
                file.extend_from_slice(fragment);
            }
            FragmentOutput::PartEnd { duration, independent: _ } => {
                assert!(part_open, "a part without fragments");
                let target: Duration = announced.expect("parts only with a part target");
                if let Some(previous) = last_part.replace(*duration) {
                    assert!(previous <= target, "part of {previous:?} over {target:?}");
                }
                part_open = false;
                parts += 1;
            }
            FragmentOutput::SegmentStart { discontinuity, part_target: announces, .. } => {
                assert_eq!(announces.is_some(), part_target.is_some());
                announced = *announces;
                assert!(!segment_open, "a segment started inside another");
                assert!(!discontinuity, "segment {segments} starts a discontinuity");
                segment_open = true;
            }
            FragmentOutput::SegmentEnd { duration, discontinuity, independent, .. } => {
                assert!(segment_open, "a segment ended that never started");
                segment_open = false;
                assert!(!part_open || part_target.is_none(), "segment ended inside a part");
                assert!(!discontinuity && *independent, "segment {segments}");
                assert!(*duration <= Duration::from_secs(5), "segment of {duration:?}");
                part_open = false;
                segments += 1;
            }
        }
    }
    assert!(segments >= 2, "{segments} segments");
    if part_target.is_some() {
        assert!(parts >= 3 * segments, "{parts} parts in {segments} segments");
    }
    let mut tracks: Vec<_> = runs.into_iter().collect();
    tracks.sort_by_key(|(id, _)| *id);
    for (id, run) in &tracks {
        assert!(run.sync >= 1, "track {id} has no sync sample");
    }
    (file, tracks.iter().map(|(_, run)| run.samples).collect())
}

#[test]
fn real_clips_make_fragmented_mp4_that_readers_and_ffmpeg_accept() {
    for which in [Clip::AvSmall, Clip::Av720p30, Clip::AudioOnlyAac, Clip::VideoOnly, Clip::AvMp3] {
        for part_target in [Some(PART), None] {
            let outputs = remux(which, part_target);
            let (file, samples) = check(&outputs, part_target);
            let path = std::env::temp_dir().join(format!(
                "rtmp-hls-fmp4-{which:?}-{}-{}.mp4",
                part_target.is_some(),
                std::process::id()
            ));
            std::fs::write(&path, &file).unwrap();
            let (errors, frames) = tools::decode(path.to_str().unwrap());
            assert_eq!(errors, "", "{which:?} {part_target:?}: ffmpeg reported problems");
            let media = testkit::flv::media_tags(&clip(which));
            let video_tags = media.iter().filter(|t| t.tag_type == 9 && t.data.get(1) == Some(&1));
            if samples.len() == 2 || which == Clip::VideoOnly {
                assert_eq!(frames, video_tags.count() as u64, "{which:?}: frames decoded");
            }
            let probe = tools::ffprobe(path.to_str().unwrap());
            if which != Clip::AudioOnlyAac {
                assert_eq!(tools::stream(&probe, "video").unwrap()["codec_name"], "h264");
            }
            std::fs::remove_file(&path).unwrap();
        }
    }
}

/// Low-latency parts: one fragment per video frame, parts no longer than the target each
/// segment announces and, but for a segment's last and independent ones, at least 85 % of it
/// (rfc8216bis §4.4.4.9); the first part of a segment is independent. The target is whole
/// frames near the one asked for: 10 x 34 ms for 0.333 s at 30 fps.
#[test]
fn parts_are_cut_on_frames_within_the_target() {
    let outputs = remux(Clip::Av720p30, Some(PART));
    let mut fragments_in_part = 0;
    let mut parts: Vec<(Duration, bool)> = Vec::new();
    let mut segments = 0;
    let mut announced = None;
    for (index, output) in outputs.iter().enumerate() {
        match output {
            FragmentOutput::Fragment(fragment) => {
                let moof = Moof::decode(&mut Cursor::new(&fragment[..])).unwrap();
                let video = moof.traf.iter().find(|t| t.tfhd.track_id == 1);
                let video_samples: usize =
                    video.map_or(0, |t| t.trun.iter().map(|r| r.samples.len()).sum());
                assert!(video_samples <= 1, "{video_samples} video frames in one fragment");
                fragments_in_part += 1;
            }
            FragmentOutput::PartEnd { duration, independent } => {
                assert!(fragments_in_part >= 1);
                parts.push((*duration, *independent));
                fragments_in_part = 0;
            }
            FragmentOutput::SegmentEnd { .. } => {
                let target: Duration = announced.expect("a segment start announced the target");
                let (_, rest) = parts.split_last().expect("a segment of parts");
                // The stream's last part also holds the audio after the last video frame.
                let checked = if index + 1 == outputs.len() { rest } else { &parts[..] };
                assert!(checked.iter().all(|part| part.0 <= target), "{parts:?} over {target:?}");
                assert!(parts[0].1, "a segment's first part is independent");
                for (duration, independent) in rest {
                    assert!(
                        *independent || *duration >= target * 85 / 100,
                        "{duration:?} in {parts:?}"
                    );
                }
                parts.clear();
                segments += 1;
            }
            FragmentOutput::SegmentStart { part_target, .. } => {
                assert_eq!(*part_target, Some(Duration::from_millis(10 * 34)));
                announced = *part_target;
            }
            FragmentOutput::Init(_) => {}
        }
    }
    assert!(segments >= 5);
}

/// A new AVC configuration mid-stream gives a new init segment, and the segment after it is
/// a discontinuity.
#[test]
fn a_new_configuration_gives_a_new_init_segment_after_a_discontinuity() {
    let small = testkit::flv::media_tags(&clip(Clip::AvSmall));
    let other = testkit::flv::media_tags(&clip(Clip::VideoOnly));
    let config = RemuxerConfig {
        target_duration: Duration::from_secs(2),
        container: Container::Fmp4 { part_target: Some(PART) },
    };
    let mut remuxer = Remuxer::new(config);
    let end = small.last().unwrap().timestamp;
    for (offset, tags) in [(0, &small), (end + 40, &other)] {
        for tag in tags {
            let kind = if tag.tag_type == 9 { TagKind::Video } else { TagKind::Audio };
            let _ = remuxer.push(kind, tag.timestamp + offset, &tag.data);
        }
    }
    remuxer.finish();
    let outputs: Vec<_> = std::iter::from_fn(|| remuxer.pull_fmp4()).collect();
    let inits: Vec<&Bytes> = outputs
        .iter()
        .filter_map(|o| if let FragmentOutput::Init(init) = o { Some(init) } else { None })
        .collect();
    assert_eq!(inits.len(), 2, "one init segment per configuration");
    assert_ne!(inits[0], inits[1]);
    let after_second_init = outputs
        .iter()
        .skip_while(|o| !matches!(o, FragmentOutput::Init(i) if i == inits[1]))
        .find_map(|o| match o {
            FragmentOutput::SegmentEnd { discontinuity, .. } => Some(*discontinuity),
            _ => None,
        });
    assert_eq!(after_second_init, Some(true));
}

/// A publish whose audio drifts against the counted audio time (ffmpeg's `-stream_loop`
/// restarts each loop's audio on the video's clock): no track's decode time ever jumps (a
/// jump makes a browser's Media Source drop video until the next keyframe); audio is steered
/// back by frames a little longer or shorter, and ends within a frame of the publisher's.
#[test]
fn decode_times_never_jump_and_audio_follows_the_publisher() {
    let tags = testkit::flv::media_tags(&clip(Clip::AvSmall));
    let loop_ms = tags.last().unwrap().timestamp + 40;
    let looped = || {
        (0..12).flat_map(|round| tags.iter().map(move |tag| (tag, tag.timestamp + round * loop_ms)))
    };
    let last_audio_ms =
        looped().filter(|(tag, _)| tag.tag_type == 8).map(|(_, at)| at).last().unwrap();
    for part_target in [None, Some(PART)] {
        let outputs = remux_tags(looped(), part_target);
        let mut next: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
        let mut steered = 0;
        let mut last_audio_time = 0;
        for output in &outputs {
            let FragmentOutput::Fragment(fragment) = output else { continue };
            let moof = Moof::decode(&mut Cursor::new(&fragment[..])).unwrap();
            for traf in &moof.traf {
                let track = traf.tfhd.track_id;
                let time = traf.tfdt.as_ref().unwrap().base_media_decode_time;
                if let Some(expected) = next.get(&track) {
                    assert_eq!(time, *expected, "track {track} jumped ({part_target:?})");
                }
                let mut end = time;
                for sample in traf.trun.iter().flat_map(|r| &r.samples) {
                    let duration = sample.duration.unwrap();
                    if track == 2 {
                        last_audio_time = end;
                        steered += usize::from(duration != 1024);
                    }
                    end += u64::from(duration);
                }
                next.insert(track, end);
            }
        }
        assert!(steered > 0, "the drift was never steered ({part_target:?})");
        // 48 kHz audio: the last frame's time within a frame of the publisher's.
        let publisher = i64::from(last_audio_ms) * 48;
        let drift = i64::try_from(last_audio_time).unwrap() - publisher;
        assert!(drift.abs() < 1024, "audio {drift} samples off the publisher ({part_target:?})");
    }
}

/// Low-latency fragments are sized for a frame; when video stalls and audio gathers in one
/// fragment (until the audio takes the pace, a target duration on), its header outgrows that
/// room and the fragment is laid out again: every fragment still reads back whole, its
/// `mdat` exactly its samples. Without parts the audio gathers the same way, in fragments
/// whose room is sized for the most samples one may hold.
#[test]
fn a_video_stall_still_gives_whole_fragments() {
    let tags = testkit::flv::media_tags(&clip(Clip::Av720p30));
    // No video from 3 s to 7 s: the first seconds of audio frames gather behind a held frame.
    let stalled = || {
        tags.iter()
            .filter(|tag| !(tag.tag_type == 9 && (3000..7000).contains(&tag.timestamp)))
            .map(|tag| (tag, tag.timestamp))
    };
    for part_target in [Some(PART), None] {
        let outputs = remux_tags(stalled(), part_target);
        let mut largest = 0;
        for output in &outputs {
            let FragmentOutput::Fragment(fragment) = output else { continue };
            let mut reader = Cursor::new(&fragment[..]);
            let moof = Moof::decode(&mut reader).expect("a moof");
            let mdat = Mdat::decode(&mut reader).expect("an mdat after it");
            let runs = || moof.traf.iter().flat_map(|t| &t.trun);
            let samples: usize = runs().map(|r| r.samples.len()).sum();
            let bytes: u64 =
                runs().flat_map(|r| &r.samples).map(|s| u64::from(s.size.unwrap())).sum();
            assert_eq!(mdat.data.len() as u64, bytes, "{part_target:?}: mdat is the samples");
            largest = largest.max(samples);
        }
        assert!(
            largest > 30,
            "{part_target:?}: no fragment gathered the stalled audio ({largest})"
        );
    }
}

/// Video that stops for ten seconds while audio goes on (a phone's camera stopped): after a
/// target duration of silence, segments and parts are cut on the audio, not independent, so
/// the playlist moves and no segment grows; the video's next keyframe starts one as usual.
#[test]
fn audio_sets_the_pace_while_the_video_is_silent() {
    let tags = testkit::flv::media_tags(&clip(Clip::Av720p30));
    // The clip twice over (24 s), without its video from 3 s to 13 s.
    let twice = || {
        let second = tags.iter().map(|tag| (tag, tag.timestamp + 12_000));
        tags.iter().map(|tag| (tag, tag.timestamp)).chain(second).filter(|(tag, at)| {
            !(tag.tag_type == 9 && (3000..13_000).contains(at) && !is_config(tag))
        })
    };
    for part_target in [None, Some(PART)] {
        let outputs = remux_tags(twice(), part_target);
        let segments: Vec<(Duration, bool)> = outputs
            .iter()
            .filter_map(|output| match output {
                FragmentOutput::SegmentEnd { duration, independent, .. } => {
                    Some((*duration, *independent))
                }
                _ => None,
            })
            .collect();
        let longest = segments.iter().map(|s| s.0).max().unwrap();
        assert!(longest <= Duration::from_millis(4100), "{part_target:?}: {segments:?}");
        let audio_cut = segments.iter().filter(|s| !s.1).count();
        assert!(audio_cut >= 3, "{part_target:?}: {audio_cut} cut on audio: {segments:?}");
        if let Some(part) = part_target {
            // The part where the video stops runs until the video has been silent for a
            // target duration; every other part is within the target.
            let parts: Vec<Duration> = outputs
                .iter()
                .filter_map(|output| match output {
                    FragmentOutput::PartEnd { duration, .. } => Some(*duration),
                    _ => None,
                })
                .collect();
            // (The stream's last part also holds the audio after its last video frame.)
            let before_last = &parts[..parts.len() - 1];
            let over = before_last.iter().filter(|&&d| d > part + Duration::from_millis(30));
            let stall = Duration::from_secs(2) + 2 * part;
            assert!(over.count() <= 1 && parts.iter().all(|&d| d <= stall), "{parts:?}");
            assert!(parts.len() > 60, "{} parts", parts.len());
        }
    }
}

/// An FLV video tag carrying a decoder configuration (AVC sequence header).
fn is_config(tag: &testkit::flv::Tag) -> bool {
    tag.data.get(1) == Some(&0)
}
