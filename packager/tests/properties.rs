//! Properties of the remuxer over arbitrary and corrupted input: it never panics, and every
//! byte it emits is valid MPEG-TS as an independent reader sees it. Real encoder tags (a
//! generated clip) are mutated so the cases reach past the first parser check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use packager::{Remuxer, RemuxerConfig, Segment, TagKind};
use proptest::prelude::*;
use testkit::flv::read_tags;
use testkit::{Clip, clip, ts_check};

/// The media tags of a real clip: (is video, timestamp, body).
fn real_tags() -> &'static [(bool, u32, Vec<u8>)] {
    static TAGS: OnceLock<Vec<(bool, u32, Vec<u8>)>> = OnceLock::new();
    TAGS.get_or_init(|| {
        read_tags(&clip(Clip::AvSmall))
            .into_iter()
            .filter(|t| t.tag_type == 8 || t.tag_type == 9)
            .map(|t| (t.tag_type == 9, t.timestamp, t.data.to_vec()))
            .collect()
    })
}

/// One step of a hostile publisher.
#[derive(Debug, Clone)]
enum Step {
    /// A real tag, possibly damaged.
    Real { index: usize, damage: Damage, timestamp_shift: i64 },
    /// Random bytes as an audio or video tag.
    Noise { video: bool, timestamp: u32, body: Vec<u8> },
}

#[derive(Debug, Clone)]
enum Damage {
    None,
    Truncate(usize),
    Flip { at: usize, mask: u8 },
    Overwrite { at: usize, bytes: Vec<u8> },
}

fn step() -> impl Strategy<Value = Step> {
    let damage = prop_oneof![
        4 => Just(Damage::None),
        1 => any::<usize>().prop_map(Damage::Truncate),
        2 => (any::<usize>(), 1u8..).prop_map(|(at, mask)| Damage::Flip { at, mask }),
        1 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Damage::Overwrite { at, bytes }),
    ];
    let shift = prop_oneof![8 => Just(0i64), 1 => -100_000i64..100_000, 1 => any::<i32>().prop_map(i64::from)];
    prop_oneof![
        8 => (any::<usize>(), damage, shift)
            .prop_map(|(index, damage, timestamp_shift)| Step::Real { index, damage, timestamp_shift }),
        1 => (any::<bool>(), any::<u32>(), proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(video, timestamp, body)| Step::Noise { video, timestamp, body }),
    ]
}

fn apply(step: &Step) -> (TagKind, u32, Vec<u8>) {
    match step {
        Step::Noise { video, timestamp, body } => {
            (if *video { TagKind::Video } else { TagKind::Audio }, *timestamp, body.clone())
        }
        Step::Real { index, damage, timestamp_shift } => {
            let tags = real_tags();
            let (video, timestamp, body) = &tags[index % tags.len()];
            let mut body = body.clone();
            match damage {
                Damage::None => {}
                Damage::Truncate(len) => body.truncate(len % (body.len() + 1)),
                Damage::Flip { at, mask } => {
                    if !body.is_empty() {
                        let at = at % body.len();
                        body[at] ^= mask;
                    }
                }
                Damage::Overwrite { at, bytes } => {
                    if !body.is_empty() {
                        let at = at % body.len();
                        let end = (at + bytes.len()).min(body.len());
                        body[at..end].copy_from_slice(&bytes[..end - at]);
                    }
                }
            }
            let timestamp = (i64::from(*timestamp) + timestamp_shift).rem_euclid(1 << 32) as u32;
            (if *video { TagKind::Video } else { TagKind::Audio }, timestamp, body)
        }
    }
}

fn run(steps: &[Step]) -> Vec<Segment> {
    let mut remuxer = Remuxer::new(RemuxerConfig::default());
    let mut segments = Vec::new();
    for step in steps {
        let (kind, timestamp, body) = apply(step);
        let _ = remuxer.push(kind, timestamp, &body);
        segments.extend(std::iter::from_fn(|| remuxer.pull()));
    }
    remuxer.finish();
    segments.extend(std::iter::from_fn(|| remuxer.pull()));
    segments
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn hostile_tag_sequences_never_panic_and_always_give_valid_ts(
        steps in proptest::collection::vec(step(), 1..400)
    ) {
        for segment in run(&steps) {
            prop_assert!(!segment.data.is_empty());
            prop_assert!(segment.data.chunks(188).all(|p| p.len() == 188 && p[0] == 0x47));
            let report = ts_check::analyze(&segment.data);
            prop_assert!(report.starts_with_tables);
            prop_assert_eq!(report.continuity_errors, 0);
            prop_assert!(segment.duration <= packager::segmenter::MAX_SEGMENT_DURATION);
        }
    }

    #[test]
    fn the_same_input_always_gives_the_same_segments(
        steps in proptest::collection::vec(step(), 1..200)
    ) {
        prop_assert_eq!(run(&steps), run(&steps));
    }
}

/// Undamaged, in order: the whole clip comes out, every frame once.
#[test]
fn the_clean_clip_is_a_fixed_point_of_the_strategy() {
    let steps: Vec<Step> = (0..real_tags().len())
        .map(|index| Step::Real { index, damage: Damage::None, timestamp_shift: 0 })
        .collect();
    let segments = run(&steps);
    let video: usize = segments
        .iter()
        .map(|s| ts_check::analyze(&s.data).pes.iter().filter(|p| p.stream_id == 0xe0).count())
        .sum();
    assert_eq!(video as u64, Clip::AvSmall.video_frames());
}

/// A frame whose NAL unit length overruns its tag is refused with an error and leaves no
/// trace (nothing of it is written, not even a part): every other frame still comes out.
#[test]
fn a_frame_with_an_overrunning_nal_length_is_refused_whole() {
    let tags = real_tags();
    // An inter frame (frame type 2) carrying NAL units (AVC packet type 1).
    let victim = tags
        .iter()
        .position(|(video, _, body)| *video && body[0] >> 4 == 2 && body[1] == 1)
        .unwrap();
    let mut remuxer = Remuxer::new(RemuxerConfig::default());
    let mut segments = Vec::new();
    for (i, (video, timestamp, body)) in tags.iter().enumerate() {
        let mut body = body.clone();
        if i == victim {
            // The first NAL unit's 4-byte length now claims ~2 GB.
            body[5] = 0x7f;
        }
        let kind = if *video { TagKind::Video } else { TagKind::Audio };
        let pushed = remuxer.push(kind, *timestamp, &body);
        assert_eq!(pushed.is_err(), i == victim, "tag {i}");
        segments.extend(std::iter::from_fn(|| remuxer.pull()));
    }
    remuxer.finish();
    segments.extend(std::iter::from_fn(|| remuxer.pull()));
    let video = segments
        .iter()
        .flat_map(|s| ts_check::analyze(&s.data).pes)
        .filter(|p| p.stream_id == 0xe0)
        .count();
    assert_eq!(video as u64, Clip::AvSmall.video_frames() - 1);
}
