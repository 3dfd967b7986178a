//! The state file: the running configuration, saved after every change and read at start.
//!
//! Saving is atomic: the text goes to a temporary file in the same directory, which is
//! flushed to disk, renamed over the state file, and the directory is flushed too, so after a
//! crash the file holds either the old or the new configuration, never a mix or nothing.
//! A state file that does not parse stops the start with an error naming it: it is never
//! taken as an empty configuration.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::{self, Config, ConfigError};

/// Name of the state file in the state directory.
pub const STATE_FILE: &str = "wvs-state.toml";

/// Why the state could not be read or saved.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file operation failed.
    #[error("state {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The state file exists but is not a valid configuration.
    #[error(
        "state file {path} is corrupt (fix or remove it; wvs will not start on an empty configuration instead): {source}"
    )]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        source: ConfigError,
    },
}

/// The state file of a state directory.
#[derive(Debug, Clone)]
pub struct StateFile {
    dir: PathBuf,
    path: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl StateFile {
    /// The state file in `dir`, creating the directory (mode 0700) if needed.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            path: dir.join(STATE_FILE),
        })
    }

    /// Path of the state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved configuration, or `None` if there is none yet.
    pub fn load(&self) -> Result<Option<Config>, StateError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => config::parse(&text)
                .map(Some)
                .map_err(|source| StateError::Corrupt {
                    path: self.path.display().to_string(),
                    source,
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&self.path)(e)),
        }
    }

    /// Save a configuration atomically (temporary file, fsync, rename, fsync of the directory).
    pub fn save(&self, cfg: &Config) -> Result<(), StateError> {
        let text = format!(
            "# wvs state: the running configuration, saved after every change. Edit with care;\n\
             # wvs refuses to start on a file that does not parse.\n{}",
            config::to_toml(cfg)
        );
        write_atomic(&self.dir, &self.path, text.as_bytes()).map_err(io_err(&self.path))
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Write `bytes` to `path` in `dir` atomically: a temporary file in the same directory,
/// flushed, renamed over `path`, then the directory flushed, so that after a crash `path`
/// holds the old bytes or the new ones, never a mix or nothing.
pub fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wvs-state-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn saves_and_restores() {
        let dir = tmpdir("rt");
        let st = StateFile::open(&dir).unwrap();
        assert!(st.load().unwrap().is_none(), "no state yet");
        let cfg = config::parse(config::EXAMPLE).unwrap();
        st.save(&cfg).unwrap();
        assert_eq!(st.load().unwrap(), Some(cfg.clone()));
        let empty = Config::default();
        st.save(&empty).unwrap();
        assert_eq!(
            st.load().unwrap(),
            Some(empty),
            "an empty configuration is a valid state"
        );
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            leftovers,
            [std::ffi::OsString::from(STATE_FILE)],
            "no temporary file left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_state_is_an_error_not_an_empty_configuration() {
        let dir = tmpdir("bad");
        let st = StateFile::open(&dir).unwrap();
        std::fs::write(st.path(), "[[service]]\nprotocol = 'tcp'\naddress = ").unwrap();
        let e = st.load().unwrap_err();
        assert!(matches!(e, StateError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("corrupt"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
