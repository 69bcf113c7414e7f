//! Filesystem helpers shared by every command that writes results: atomic writes and output
//! folders checked before any expensive work starts.

use crate::error::{Error, Result};
use std::path::Path;

/// Lets `write` fill a temporary file beside `path`, then renames it over `path`: a reader (or
/// a run killed midway) never sees half a file.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = path.with_extension("tmp");
    write(&tmp).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| std::fs::write(tmp, bytes))
}

/// Creates `dir` if needed and proves it is writable with a probe file, so that a bad `-o`
/// fails in a second rather than after the model has loaded and run.
pub fn ensure_writable_dir(dir: &Path) -> Result<()> {
    let explain = |e: std::io::Error| {
        Error::Input(format!(
            "cannot write to the output folder {}: {e}; choose another with -o",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(explain)?;
    let probe = dir.join(".dream3d-write-probe");
    std::fs::write(&probe, b"").map_err(explain)?;
    std::fs::remove_file(&probe).map_err(explain)
}
