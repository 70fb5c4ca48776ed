//! Fragmented MP4 boxes (ISO/IEC 14496-12; CMAF's, ISO/IEC 23000-19, but for its one track per
//! init segment and fragment: both tracks share them here): the init segment (`ftyp` + `moov`, one track per elementary stream, no samples) and fragments
//! (`moof` + `mdat`, every track's samples of a span of time).
//!
//! Written by hand rather than with a box library: the layouts are fixed and few, a
//! fragment is written for every video frame in low-latency mode, and the one crate that
//! fits (`mp4-atom`) would bring a second version of `thiserror` and big-number arithmetic
//! into the server. The tests read everything back with two independent readers
//! (`mp4-atom` and Mozilla's `mp4parse`), and ffmpeg and hls.js play it.

/// What a track carries, as its sample entry (`stsd`) describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SampleEntry {
    /// H.264: `avc1` with the AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3).
    Avc {
        /// The record, as the FLV sequence header carries it.
        record: Vec<u8>,
        /// Picture size.
        width: u16,
        /// Picture size.
        height: u16,
        /// Colour description (`colr`), when the publisher sent one.
        colour: Option<Colour>,
    },
    /// H.265: `hvc1` with the HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 §8.3.3).
    Hevc {
        /// The record.
        record: Vec<u8>,
        /// Picture size.
        width: u16,
        /// Picture size.
        height: u16,
        /// Colour description (`colr`), when the publisher sent one.
        colour: Option<Colour>,
    },
    /// AV1: `av01` with the AV1CodecConfigurationRecord (AV1-ISOBMFF §2.3).
    Av1 {
        /// The record.
        record: Vec<u8>,
        /// Picture size.
        width: u16,
        /// Picture size.
        height: u16,
        /// Colour description (`colr`), when the publisher sent one.
        colour: Option<Colour>,
    },
    /// VP9: `vp09` with the VPCodecConfigurationRecord (VP-ISOBMFF §2.2), a full box.
    Vp9 {
        /// The record's payload (after the full box's version and flags).
        record: Vec<u8>,
        /// Picture size.
        width: u16,
        /// Picture size.
        height: u16,
        /// Colour description (`colr`), when the publisher sent one.
        colour: Option<Colour>,
    },
    /// AAC: `mp4a` with an `esds` holding the AudioSpecificConfig (ISO/IEC 14496-14 §5.6).
    Aac {
        /// The AudioSpecificConfig.
        config: Vec<u8>,
        /// Sampling rate in Hz (the track's timescale too).
        sample_rate: u32,
        /// Channels.
        channels: u16,
    },
    /// MP3: `mp4a` with an `esds` of object type 0x6B (MPEG-1 audio) or 0x69 (MPEG-2).
    Mp3 {
        /// MPEG-1 (32 to 48 kHz) rather than MPEG-2 (16 to 24 kHz).
        mpeg1: bool,
        /// Sampling rate in Hz.
        sample_rate: u32,
        /// Channels.
        channels: u16,
    },
}

/// A video track's colour description: the code points of ISO/IEC 23091-2 (H.273) that an
/// `nclx` colour box carries (ISO/IEC 14496-12 §12.1.5), as Enhanced RTMP's `colorInfo`
/// metadata gives them. HDR players read the transfer function (16: PQ, 18: HLG) here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Colour {
    /// `colour_primaries` (1: BT.709, 9: BT.2020).
    pub primaries: u16,
    /// `transfer_characteristics` (1: BT.709, 16: SMPTE ST 2084, 18: ARIB STD-B67).
    pub transfer: u16,
    /// `matrix_coefficients` (1: BT.709, 9: BT.2020 non-constant).
    pub matrix: u16,
    /// Full-range samples.
    pub full_range: bool,
}

impl SampleEntry {
    fn is_video(&self) -> bool {
        matches!(self, Self::Avc { .. } | Self::Hevc { .. } | Self::Av1 { .. } | Self::Vp9 { .. })
    }
}

/// One track of an init segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInit {
    /// Track id (1 or more), as fragments name it.
    pub id: u32,
    /// Ticks per second of the track's timestamps.
    pub timescale: u32,
    /// What it carries.
    pub entry: SampleEntry,
}

/// Sample flags of a sync sample: `sample_depends_on` = 2 (does not depend on others).
pub const SYNC_SAMPLE: u32 = 0x0200_0000;
/// Sample flags of other samples: depends on others, `sample_is_non_sync_sample` set.
pub const NON_SYNC_SAMPLE: u32 = 0x0101_0000;

/// One sample of a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Duration in the track's timescale.
    pub duration: u32,
    /// Bytes in `mdat`.
    pub size: u32,
    /// [`SYNC_SAMPLE`] or [`NON_SYNC_SAMPLE`].
    pub flags: u32,
    /// Presentation time minus decode time, in the track's timescale (negative with
    /// B-frames' edits; version 1 `trun`).
    pub composition_offset: i32,
}

/// One track's run in a fragment.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    /// Track id.
    pub track: u32,
    /// Decode time of the first sample (`tfdt`), in the track's timescale.
    pub base_decode_time: u64,
    /// The samples, in decode order; their bytes follow each other in `mdat`.
    pub samples: &'a [Sample],
}

/// Bytes a fragment's header (`moof` and the `mdat` box header) takes for `runs` (track
/// count and sample count per track).
pub fn fragment_header_len(runs: &[Run<'_>]) -> usize {
    const MOOF: usize = 8;
    const MFHD: usize = 16;
    const TRAF: usize = 8;
    const TFHD: usize = 16;
    const TFDT: usize = 20;
    const TRUN: usize = 20;
    const TRUN_SAMPLE: usize = 16;
    const MDAT: usize = 8;
    let trafs: usize =
        runs.iter().map(|run| TRAF + TFHD + TFDT + TRUN + TRUN_SAMPLE * run.samples.len()).sum();
    MOOF + MFHD + trafs + MDAT
}

/// Writes the `moof` and the `mdat` header of a fragment numbered `sequence` whose runs are
/// `runs` into `header`, which must be exactly [`fragment_header_len`] long; the samples'
/// bytes (every run's, in order) follow it in the output, `payload` bytes in all.
pub fn write_fragment_header(sequence: u32, runs: &[Run<'_>], payload: usize, header: &mut [u8]) {
    let mut out = Cursor { out: header, at: 0 };
    let moof = out.begin(b"moof");
    let mfhd = out.begin_full(b"mfhd", 0, 0);
    out.u32(sequence);
    out.end(mfhd);
    // Each run's samples start this far into the mdat payload.
    let mut offset = 0usize;
    let header_len = fragment_header_len(runs);
    for run in runs {
        let traf = out.begin(b"traf");
        // default-base-is-moof: data offsets count from the moof's first byte.
        let tfhd = out.begin_full(b"tfhd", 0, 0x02_0000);
        out.u32(run.track);
        out.end(tfhd);
        let tfdt = out.begin_full(b"tfdt", 1, 0);
        out.u64(run.base_decode_time);
        out.end(tfdt);
        // data-offset, sample-duration, -size, -flags, -composition-time-offset present.
        let trun = out.begin_full(b"trun", 1, 0x00_0f01);
        out.u32(u32::try_from(run.samples.len()).unwrap_or(u32::MAX));
        let data_offset = header_len + offset;
        out.u32(u32::try_from(data_offset).unwrap_or(u32::MAX));
        for sample in run.samples {
            out.u32(sample.duration);
            out.u32(sample.size);
            out.u32(sample.flags);
            out.u32(sample.composition_offset as u32);
            offset += sample.size as usize;
        }
        out.end(trun);
        out.end(traf);
    }
    out.end(moof);
    let mdat_len = 8 + payload;
    out.u32(u32::try_from(mdat_len).unwrap_or(u32::MAX));
    out.bytes(b"mdat");
    debug_assert_eq!(out.at, header.len(), "fragment header length mismatch");
}

/// The init segment of `tracks`.
pub fn init_segment(tracks: &[TrackInit]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    let mut w = Writer { out: &mut out };
    let ftyp = w.begin(b"ftyp");
    w.bytes(b"iso6");
    w.u32(0);
    // Not `cmfc`: CMAF wants one track per init segment and per fragment, and both tracks
    // share them here.
    for brand in [b"iso6", b"mp41", b"dash"] {
        w.bytes(brand);
    }
    // AV1-ISOBMFF §2.1: a file with AV1 tracks lists `av01`.
    if tracks.iter().any(|track| matches!(track.entry, SampleEntry::Av1 { .. })) {
        w.bytes(b"av01");
    }
    w.end(ftyp);

    let moov = w.begin(b"moov");
    let mvhd = w.begin_full(b"mvhd", 0, 0);
    w.u32(0); // creation time
    w.u32(0); // modification time
    w.u32(1000); // timescale
    w.u32(0); // duration: unknown (fragmented)
    w.u32(0x0001_0000); // rate 1.0
    w.u16(0x0100); // volume 1.0
    w.zeros(10);
    w.matrix();
    w.zeros(24); // pre_defined
    w.u32(tracks.iter().map(|t| t.id).max().unwrap_or(0) + 1); // next_track_ID
    w.end(mvhd);
    for track in tracks {
        w.trak(track);
    }
    let mvex = w.begin(b"mvex");
    for track in tracks {
        let trex = w.begin_full(b"trex", 0, 0);
        w.u32(track.id);
        w.u32(1); // default_sample_description_index
        w.u32(0); // default_sample_duration
        w.u32(0); // default_sample_size
        w.u32(0); // default_sample_flags
        w.end(trex);
    }
    w.end(mvex);
    w.end(moov);
    out
}

/// Appends boxes to a growing buffer.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    fn begin(&mut self, kind: &[u8; 4]) -> usize {
        let at = self.out.len();
        self.out.extend_from_slice(&[0; 4]);
        self.out.extend_from_slice(kind);
        at
    }

    fn begin_full(&mut self, kind: &[u8; 4], version: u8, flags: u32) -> usize {
        let at = self.begin(kind);
        self.u32(u32::from(version) << 24 | (flags & 0x00ff_ffff));
        at
    }

    fn end(&mut self, at: usize) {
        let len = u32::try_from(self.out.len() - at).unwrap_or(u32::MAX);
        self.out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    fn u16(&mut self, value: u16) {
        self.out.extend_from_slice(&value.to_be_bytes());
    }

    fn u32(&mut self, value: u32) {
        self.out.extend_from_slice(&value.to_be_bytes());
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    fn zeros(&mut self, n: usize) {
        self.out.resize(self.out.len() + n, 0);
    }

    /// A descriptor's tag and the size of its `len`-byte payload (ISO/IEC 14496-1 §8.3.3:
    /// seven bits a byte, the high bit set on all but the last).
    fn descriptor(&mut self, tag: u8, len: usize) {
        self.bytes(&[tag]);
        for group in (0..size_field_len(len)).rev() {
            let more = if group > 0 { 0x80 } else { 0 };
            let bits = (len >> (7 * group)) & 0x7f;
            self.bytes(&[more | u8::try_from(bits).unwrap_or(0x7f)]);
        }
    }

    /// The unity transformation matrix (ISO/IEC 14496-12 §8.2.2).
    fn matrix(&mut self) {
        for value in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
            self.u32(value);
        }
    }

    fn trak(&mut self, track: &TrackInit) {
        let video = track.entry.is_video();
        let (width, height) = match &track.entry {
            SampleEntry::Avc { width, height, .. }
            | SampleEntry::Hevc { width, height, .. }
            | SampleEntry::Av1 { width, height, .. }
            | SampleEntry::Vp9 { width, height, .. } => (*width, *height),
            _ => (0, 0),
        };
        let trak = self.begin(b"trak");
        // enabled, in movie, in preview.
        let tkhd = self.begin_full(b"tkhd", 0, 0x07);
        self.u32(0); // creation time
        self.u32(0); // modification time
        self.u32(track.id);
        self.u32(0); // reserved
        self.u32(0); // duration
        self.zeros(8); // reserved
        self.u16(0); // layer
        self.u16(if video { 0 } else { 1 }); // alternate group
        self.u16(if video { 0 } else { 0x0100 }); // volume
        self.u16(0); // reserved
        self.matrix();
        self.u32(u32::from(width) << 16);
        self.u32(u32::from(height) << 16);
        self.end(tkhd);

        let mdia = self.begin(b"mdia");
        let mdhd = self.begin_full(b"mdhd", 0, 0);
        self.u32(0); // creation time
        self.u32(0); // modification time
        self.u32(track.timescale);
        self.u32(0); // duration
        self.u16(0x55c4); // language: "und"
        self.u16(0);
        self.end(mdhd);
        let hdlr = self.begin_full(b"hdlr", 0, 0);
        self.u32(0);
        self.bytes(if video { b"vide" } else { b"soun" });
        self.zeros(12);
        self.bytes(if video { b"VideoHandler\0" } else { b"SoundHandler\0" });
        self.end(hdlr);

        let minf = self.begin(b"minf");
        if video {
            let vmhd = self.begin_full(b"vmhd", 0, 1);
            self.zeros(8); // graphicsmode, opcolor
            self.end(vmhd);
        } else {
            let smhd = self.begin_full(b"smhd", 0, 0);
            self.zeros(4); // balance, reserved
            self.end(smhd);
        }
        let dinf = self.begin(b"dinf");
        let dref = self.begin_full(b"dref", 0, 0);
        self.u32(1);
        let url = self.begin_full(b"url ", 0, 1); // media data in this file
        self.end(url);
        self.end(dref);
        self.end(dinf);

        let stbl = self.begin(b"stbl");
        let stsd = self.begin_full(b"stsd", 0, 0);
        self.u32(1);
        self.sample_entry(&track.entry);
        self.end(stsd);
        for kind in [b"stts", b"stsc", b"stco"] {
            let empty = self.begin_full(kind, 0, 0);
            self.u32(0);
            self.end(empty);
        }
        let stsz = self.begin_full(b"stsz", 0, 0);
        self.u32(0); // sample_size
        self.u32(0); // sample_count
        self.end(stsz);
        self.end(stbl);
        self.end(minf);
        self.end(mdia);
        self.end(trak);
    }

    fn sample_entry(&mut self, entry: &SampleEntry) {
        match entry {
            SampleEntry::Avc { record, width, height, colour } => {
                self.visual(b"avc1", (*width, *height), b"avcC", None, record, *colour);
            }
            SampleEntry::Hevc { record, width, height, colour } => {
                self.visual(b"hvc1", (*width, *height), b"hvcC", None, record, *colour);
            }
            SampleEntry::Av1 { record, width, height, colour } => {
                self.visual(b"av01", (*width, *height), b"av1C", None, record, *colour);
            }
            SampleEntry::Vp9 { record, width, height, colour } => {
                self.visual(b"vp09", (*width, *height), b"vpcC", Some(1), record, *colour);
            }
            SampleEntry::Aac { config, sample_rate, channels } => {
                // MPEG-4 audio (ISO/IEC 14496-3), stream type audio.
                self.audio(*sample_rate, *channels, 0x40, config);
            }
            SampleEntry::Mp3 { mpeg1, sample_rate, channels } => {
                let object_type = if *mpeg1 { 0x6b } else { 0x69 };
                self.audio(*sample_rate, *channels, object_type, &[]);
            }
        }
    }

    /// A visual sample entry (ISO/IEC 14496-12 §12.1.3) with its configuration box
    /// (`version`: a full box of version 1, flags 0, as `vpcC` is) and, when known, its
    /// colour box.
    fn visual(
        &mut self,
        kind: &[u8; 4],
        (width, height): (u16, u16),
        config_kind: &[u8; 4],
        version: Option<u8>,
        config: &[u8],
        colour: Option<Colour>,
    ) {
        let entry = self.begin(kind);
        self.zeros(6);
        self.u16(1); // data_reference_index
        self.zeros(16); // pre_defined, reserved
        self.u16(width);
        self.u16(height);
        self.u32(0x0048_0000); // 72 dpi
        self.u32(0x0048_0000);
        self.u32(0);
        self.u16(1); // frame_count
        self.zeros(32); // compressorname
        self.u16(0x0018); // depth
        self.u16(0xffff); // pre_defined = -1
        let config_box = match version {
            Some(version) => self.begin_full(config_kind, version, 0),
            None => self.begin(config_kind),
        };
        self.bytes(config);
        self.end(config_box);
        if let Some(colour) = colour {
            let colr = self.begin(b"colr");
            self.bytes(b"nclx");
            self.u16(colour.primaries);
            self.u16(colour.transfer);
            self.u16(colour.matrix);
            self.bytes(&[if colour.full_range { 0x80 } else { 0 }]);
            self.end(colr);
        }
        self.end(entry);
    }

    /// An `mp4a` audio sample entry (ISO/IEC 14496-14 §5.6) with its `esds`: an
    /// ES_Descriptor holding a DecoderConfigDescriptor (`object_type`) and, when `config` is
    /// not empty, its DecoderSpecificInfo (ISO/IEC 14496-1 §7.2.6).
    fn audio(&mut self, sample_rate: u32, channels: u16, object_type: u8, config: &[u8]) {
        let entry = self.begin(b"mp4a");
        self.zeros(6);
        self.u16(1); // data_reference_index
        self.zeros(8); // reserved
        self.u16(channels);
        self.u16(16); // sample size
        self.u32(0); // pre_defined, reserved
        // The rate as 16.16 when it fits (it is the track's timescale anyway).
        self.u32(if sample_rate < 0x1_0000 { sample_rate << 16 } else { 0 });
        let esds = self.begin_full(b"esds", 0, 0);
        let specific = if config.is_empty() { 0 } else { descriptor_len(config.len()) };
        let decoder_config = 13 + specific;
        let es = 3 + descriptor_len(decoder_config) + descriptor_len(1);
        self.descriptor(0x03, es);
        self.u16(0); // ES_ID
        self.bytes(&[0]); // flags, stream priority
        self.descriptor(0x04, decoder_config);
        self.bytes(&[object_type, 0x15]); // audio stream
        self.bytes(&[0, 0, 0]); // bufferSizeDB
        self.u32(0); // maxBitrate
        self.u32(0); // avgBitrate
        if !config.is_empty() {
            self.descriptor(0x05, config.len());
            self.bytes(config);
        }
        self.descriptor(0x06, 1);
        self.bytes(&[0x02]); // SLConfigDescriptor, predefined MP4
        self.end(esds);
        self.end(entry);
    }
}

/// Bytes of a descriptor's size field for a payload of `len` bytes: seven bits a byte (ISO/IEC
/// 14496-1 §8.3.3), at most four. An AudioSpecificConfig is a few bytes, but nothing bounds
/// it below a message's length.
fn size_field_len(len: usize) -> usize {
    match len {
        0..0x80 => 1,
        0x80..0x4000 => 2,
        0x4000..0x20_0000 => 3,
        _ => 4,
    }
}

/// Bytes of a whole descriptor with a payload of `len` bytes: tag, size field, payload.
fn descriptor_len(len: usize) -> usize {
    1 + size_field_len(len) + len
}

/// Writes boxes into a slice of a known length.
struct Cursor<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Cursor<'_> {
    fn begin(&mut self, kind: &[u8; 4]) -> usize {
        let at = self.at;
        self.u32(0);
        self.bytes(kind);
        at
    }

    fn begin_full(&mut self, kind: &[u8; 4], version: u8, flags: u32) -> usize {
        let at = self.begin(kind);
        self.u32(u32::from(version) << 24 | (flags & 0x00ff_ffff));
        at
    }

    fn end(&mut self, at: usize) {
        let len = u32::try_from(self.at - at).unwrap_or(u32::MAX);
        self.out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    fn u32(&mut self, value: u32) {
        self.bytes(&value.to_be_bytes());
    }

    fn u64(&mut self, value: u64) {
        self.bytes(&value.to_be_bytes());
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.out[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(id: u32, entry: SampleEntry) -> TrackInit {
        TrackInit { id, timescale: 90_000, entry }
    }

    fn brands(init: &[u8]) -> Vec<[u8; 4]> {
        let len = usize::try_from(u32::from_be_bytes(init[..4].try_into().unwrap())).unwrap();
        assert_eq!(&init[4..8], b"ftyp");
        init[16..len].chunks(4).map(|brand| brand.try_into().unwrap()).collect()
    }

    #[test]
    fn brands_claim_av1_when_it_is_there_and_never_cmaf() {
        let av1 =
            SampleEntry::Av1 { record: vec![0x81, 0, 0, 0], width: 320, height: 240, colour: None };
        let aac = SampleEntry::Aac { config: vec![0x12, 0x10], sample_rate: 44_100, channels: 2 };
        let with_av1 = brands(&init_segment(&[track(1, av1), track(2, aac.clone())]));
        assert!(with_av1.contains(b"av01"), "{with_av1:?}");
        let audio_only = brands(&init_segment(&[track(1, aac)]));
        assert!(!audio_only.contains(b"av01"));
        for list in [with_av1, audio_only] {
            assert!(!list.contains(b"cmfc"), "two tracks share the init segment: not CMAF");
            assert!(list.contains(b"iso6"));
        }
    }

    /// An AudioSpecificConfig longer than a one-byte descriptor size (127) is written whole,
    /// with sizes Mozilla's reader follows.
    #[test]
    fn long_audio_configs_get_multi_byte_descriptor_sizes() {
        for extra in [0, 120, 200, 20_000] {
            let mut config = vec![0x12, 0x10];
            config.resize(2 + extra, 0);
            let entry =
                SampleEntry::Aac { config: config.clone(), sample_rate: 44_100, channels: 2 };
            let init = init_segment(&[track(1, entry)]);
            let context = mp4parse::read_mp4(&mut std::io::Cursor::new(&init[..])).unwrap();
            let stsd = context.tracks[0].stsd.as_ref().unwrap();
            let mp4parse::SampleEntry::Audio(audio) = &stsd.descriptions[0] else {
                panic!("not an audio entry")
            };
            let mp4parse::AudioCodecSpecific::ES_Descriptor(es) = &audio.codec_specific else {
                panic!("no ES descriptor")
            };
            assert_eq!(es.decoder_specific_data.to_vec(), config, "{extra} bytes after the ASC");
            assert_eq!(es.audio_object_type, Some(2));
        }
    }

    #[test]
    fn descriptor_sizes_are_seven_bits_a_byte() {
        let mut out = Vec::new();
        let mut cursor = Writer { out: &mut out };
        cursor.descriptor(0x05, 127);
        cursor.descriptor(0x05, 128);
        cursor.descriptor(0x05, 0x4000);
        assert_eq!(out, [0x05, 0x7f, 0x05, 0x81, 0x00, 0x05, 0x81, 0x80, 0x00]);
        assert_eq!(descriptor_len(127), 129);
        assert_eq!(descriptor_len(128), 131);
    }
}
