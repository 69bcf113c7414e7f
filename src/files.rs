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
    // Named by process: shards probing one shared folder must not remove each other's probe.
    let probe = dir.join(format!(".dream3d-write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(explain)?;
    std::fs::remove_file(&probe).map_err(explain)
}

/// Appends `line` and its newline to the file at `path` in one write, after a newline if a
/// killed writer left the last line unterminated: a line is whole or absent, never glued to the
/// next process's.
pub fn append_line(path: &Path, line: &str) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let mut text = String::with_capacity(line.len() + 2);
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len > 0 {
        let mut last = [0u8];
        file.seek(SeekFrom::Start(len - 1))
            .and_then(|_| file.read_exact(&mut last))
            .map_err(|e| Error::io(path, e))?;
        if last[0] != b'\n' {
            text.push('\n');
        }
    }
    text.push_str(line);
    text.push('\n');
    file.write_all(text.as_bytes())
        .map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_lines_stay_whole_after_a_cut_short_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        append_line(&path, "{\"a\":1}").unwrap();
        // A writer killed mid-line.
        std::fs::write(&path, "{\"a\":1}\n{\"b\":").unwrap();
        append_line(&path, "{\"c\":3}").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"b\":\n{\"c\":3}\n"
        );
    }
}
