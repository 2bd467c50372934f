//! Where a region link stands in a peer's stream — the stream's epoch and the last entry id
//! applied — kept durably in the data directory, beside the data it describes.
//!
//! Written (temporary file, fsync, rename, directory fsync) only after the entries up to it are
//! acknowledged by the shards, i.e. durable in their logs: a restart resumes from it and at
//! worst re-applies entries whose versions then lose to themselves (last-write-wins makes a
//! repeat a no-op), never skips one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkOffset {
    /// The stream's epoch when `id` was read (`None`: never read).
    pub epoch: Option<String>,
    /// The last entry id applied (`0-0`: from the start).
    pub id: String,
}

pub struct OffsetFile {
    path: PathBuf,
}

impl OffsetFile {
    pub fn new(data_dir: &Path, link: &str) -> OffsetFile {
        OffsetFile {
            path: data_dir.join("regions").join(format!("link-{link}.json")),
        }
    }

    /// The saved offset; a missing file is a link that never read. A damaged one is an error
    /// (never silently read from the start or the end).
    pub fn load(&self) -> std::io::Result<LinkOffset> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", self.path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LinkOffset {
                epoch: None,
                id: "0-0".into(),
            }),
            Err(e) => Err(e),
        }
    }

    pub fn save(&self, offset: &LinkOffset) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(offset)?)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        std::fs::File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_survives_a_restart_and_a_damaged_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = OffsetFile::new(dir.path(), "eu");
        assert_eq!(f.load().unwrap().id, "0-0");
        let o = LinkOffset {
            epoch: Some("e1".into()),
            id: "17-3".into(),
        };
        f.save(&o).unwrap();
        assert_eq!(OffsetFile::new(dir.path(), "eu").load().unwrap(), o);
        std::fs::write(dir.path().join("regions/link-eu.json"), b"{").unwrap();
        assert!(f.load().is_err());
    }
}
