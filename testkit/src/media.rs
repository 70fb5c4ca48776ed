//! The generated test clips. The first test that needs one runs the generator script; a lock
//! file keeps concurrent test processes from generating the same clip twice.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A clip made by `scripts/gen-test-media.sh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clip {
    /// 12 s, 1280x720 30 fps H.264 High with B-frames, 2 s GOP, AAC-LC 44.1 kHz stereo.
    Av720p30,
    /// 4 s, 320x240 25 fps H.264, 1 s GOP, AAC-LC 48 kHz mono.
    AvSmall,
}

impl Clip {
    fn file_name(self) -> &'static str {
        match self {
            Self::Av720p30 => "av-720p30.flv",
            Self::AvSmall => "av-small.flv",
        }
    }

    /// Video frames in the clip.
    pub fn video_frames(self) -> u64 {
        match self {
            Self::Av720p30 => 12 * 30,
            Self::AvSmall => 4 * 25,
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
        let status =
            Command::new(root.join("scripts").join("gen-test-media.sh")).arg(&dir).status().expect(
                "running scripts/gen-test-media.sh (needs ffmpeg; the test command installs it)",
            );
        assert!(status.success(), "scripts/gen-test-media.sh failed");
    }
    assert!(path.exists(), "{} was not generated", path.display());
    path
}
