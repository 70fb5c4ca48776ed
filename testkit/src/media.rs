//! The generated test clips. The first test that needs one runs the generator script; a lock
//! file keeps concurrent test processes from generating the same clip twice.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A clip made by `scripts/gen-test-media.sh` (see it for the exact ffmpeg settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clip {
    /// 12 s, 1280x720 30 fps H.264 High with 3 B-frames, 2 s GOP, AAC-LC 44.1 kHz stereo.
    Av720p30,
    /// 4 s, 320x240 25 fps H.264, 1 s GOP, AAC-LC 48 kHz mono.
    AvSmall,
    /// 8 s of AAC-LC 48 kHz mono, no video.
    AudioOnlyAac,
    /// 6 s, 640x360 30 fps H.264 Main, no audio.
    VideoOnly,
    /// 6 s, 320x240 25 fps H.264 with AAC-LC 24 kHz stereo.
    AvAac24k,
    /// 6 s, 320x240 25 fps H.264 with MP3 (MPEG-1 layer III) 44.1 kHz stereo.
    AvMp3,
    /// 6 s, 320x240 25 fps H.264 with MP3 (MPEG-2 layer III) 22.05 kHz mono.
    AvMp3Low,
    /// 6 s, Sorenson Spark video with AAC-LC.
    SorensonAac,
    /// 6 s, H.264 with Nellymoser audio.
    H264Nellymoser,
    /// 6 s, H.264 with Speex audio.
    H264Speex,
    /// 6 s, 5 fps H.264 (2 s GOP) with AAC-LC.
    Av5Fps,
    /// 12 s, 25 fps H.264 with a 5 s GOP, AAC-LC.
    AvLongGop,
    /// 8 s, 25 fps H.264 with a 0.2 s GOP, AAC-LC.
    AvShortGop,
    /// 60 s, 1280x720 30 fps H.264 High at 2.5 Mbit/s with AAC-LC: the benchmark input.
    Bench720p60s,
}

impl Clip {
    fn file_name(self) -> &'static str {
        match self {
            Self::Av720p30 => "av-720p30.flv",
            Self::AvSmall => "av-small.flv",
            Self::AudioOnlyAac => "audio-only-aac.flv",
            Self::VideoOnly => "video-only.flv",
            Self::AvAac24k => "av-aac24k.flv",
            Self::AvMp3 => "av-mp3.flv",
            Self::AvMp3Low => "av-mp3-22k.flv",
            Self::SorensonAac => "sorenson-aac.flv",
            Self::H264Nellymoser => "h264-nellymoser.flv",
            Self::H264Speex => "h264-speex.flv",
            Self::Av5Fps => "av-5fps.flv",
            Self::AvLongGop => "av-long-gop.flv",
            Self::AvShortGop => "av-short-gop.flv",
            Self::Bench720p60s => "bench-720p-60s.flv",
        }
    }

    /// Video frames in the clip.
    pub fn video_frames(self) -> u64 {
        match self {
            Self::Av720p30 => 12 * 30,
            Self::AvSmall => 4 * 25,
            Self::AudioOnlyAac => 0,
            Self::VideoOnly => 6 * 30,
            Self::Av5Fps => 6 * 5,
            Self::AvLongGop => 12 * 25,
            Self::AvShortGop => 8 * 25,
            Self::Bench720p60s => 60 * 30,
            _ => 6 * 25,
        }
    }
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// The path of `clip`, generating the clips first if needed.
pub fn clip(clip: Clip) -> PathBuf {
    let root = workspace_root();
    let dir = root.join("target").join("test-media");
    let path = dir.join(clip.file_name());
    if path.exists() {
        return path;
    }
    fs::create_dir_all(&dir).unwrap();
    let lock = File::create(dir.join(".lock")).unwrap();
    lock.lock().unwrap();
    if !path.exists() {
        let mut command = Command::new(root.join("scripts").join("gen-test-media.sh"));
        command.arg(&dir);
        if clip == Clip::Bench720p60s {
            command.arg("bench");
        }
        let status = command.status().expect(
            "running scripts/gen-test-media.sh (needs ffmpeg; the test command installs it)",
        );
        assert!(status.success(), "scripts/gen-test-media.sh failed");
    }
    assert!(path.exists(), "{} was not generated", path.display());
    path
}
