//! Persisted media sequence numbers: `<data-dir>/sequences.json` maps each stream name to the
//! next media sequence number, written atomically whenever it changes (at most once a
//! second) and on shutdown. After a crash the store resumes each stream [`RESTART_MARGIN`]
//! numbers later, so players never see a sequence number go back (RFC 8216 §6.2.1).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use stream_store::StreamStore;

const FILE_NAME: &str = "sequences.json";
/// Segments that may have been published after the last save before a crash (saves happen
/// every second; segments last about the target duration).
const RESTART_MARGIN: u64 = 16;

/// The sequence file of a data directory.
#[derive(Debug, Clone)]
pub(crate) struct SequenceFile {
    path: PathBuf,
}

impl SequenceFile {
    pub(crate) fn new(data_dir: &Path) -> Self {
        Self { path: data_dir.join(FILE_NAME) }
    }

    /// The saved numbers plus the restart margin; empty if there is no readable file.
    pub(crate) fn load_for_restart(&self) -> Vec<(String, u64)> {
        let Ok(bytes) = std::fs::read(&self.path) else { return Vec::new() };
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&bytes) else {
            tracing::warn!(path = %self.path.display(), "unreadable sequence file ignored");
            return Vec::new();
        };
        map.into_iter()
            .filter_map(|(name, next)| Some((name, next.as_u64()?.saturating_add(RESTART_MARGIN))))
            .collect()
    }

    /// Writes `sequences` atomically.
    pub(crate) fn write(&self, sequences: &[(String, u64)]) -> std::io::Result<()> {
        let map: Map<String, Value> =
            sequences.iter().map(|(name, next)| (name.clone(), Value::from(*next))).collect();
        let json = serde_json::to_vec_pretty(&Value::Object(map)).map_err(std::io::Error::other)?;
        auth::atomic_file::write(&self.path, &json)
    }

    /// Saves the store's current numbers.
    pub(crate) fn save(&self, store: &StreamStore) -> std::io::Result<()> {
        self.write(&store.sequences())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_adds_the_margin_and_ignores_garbage() {
        let dir = std::env::temp_dir().join(format!("rtmp-hls-seq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = SequenceFile::new(&dir);
        file.write(&[("cam".into(), 41), ("other".into(), 3)]).unwrap();
        let mut loaded = file.load_for_restart();
        loaded.sort();
        assert_eq!(
            loaded,
            [("cam".to_owned(), 41 + RESTART_MARGIN), ("other".to_owned(), 3 + RESTART_MARGIN)]
        );
        std::fs::write(dir.join(FILE_NAME), b"{not json").unwrap();
        assert!(file.load_for_restart().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
