//! The outputs a session keeps of its cells, for `get_cell` and exports: one append-only file of
//! JSON lines, `{"cell":"<id>","outputs":[…nbformat outputs…]}`, one per recorded cell.
//!
//! Recording a cell appends one line (no new file, no fsync: the page cache outlives a SIGKILL
//! of the server, and the reply goes out after the write). Reading looks the cell up in an index
//! of line offsets, built by one pass over the file the first time a cell is read and kept up to
//! date by later appends. A line cut short by a crash is skipped, and the next append starts on
//! a new line. Outputs kept by earlier versions as `cells/<id>.json` are still read.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::graph::CellId;

/// Where each kept cell's line starts in the file, and its length (newline excluded).
type Index = HashMap<CellId, (u64, usize)>;

/// One session's kept outputs.
#[derive(Debug)]
pub struct KeptOutputs {
    log: PathBuf,
    legacy_dir: PathBuf,
    /// `None` until a cell is first read.
    index: Mutex<Option<Index>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Line<T> {
    cell: CellId,
    outputs: T,
}

impl KeptOutputs {
    /// The outputs kept in `log`, and (from earlier versions) as `<legacy_dir>/<id>.json`.
    pub fn new(log: PathBuf, legacy_dir: PathBuf) -> Self {
        KeptOutputs { log, legacy_dir, index: Mutex::new(None) }
    }

    /// Appends the nbformat `outputs` of cell `id`.
    ///
    /// # Errors
    /// When the file cannot be opened or written.
    pub fn keep(&self, id: &CellId, outputs: &[serde_json::Value]) -> io::Result<()> {
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(&self.log)?;
        let mut start = file.metadata()?.len();
        let mut bytes = Vec::with_capacity(256);
        if start > 0 && !ends_with_newline(&file, start)? {
            bytes.push(b'\n');
            start += 1;
        }
        let line_start = bytes.len();
        serde_json::to_writer(&mut bytes, &Line { cell: id.clone(), outputs }).expect("outputs serialise");
        let len = bytes.len() - line_start;
        bytes.push(b'\n');
        file.write_all(&bytes)?;
        if let Some(index) = self.index.lock().expect("index lock").as_mut() {
            index.insert(id.clone(), (start, len));
        }
        Ok(())
    }

    /// The nbformat outputs kept for cell `id`, `None` when there are none (never kept, or
    /// unreadable: a failure is logged, as the cell itself matters more).
    pub fn read(&self, id: &CellId) -> Option<Vec<serde_json::Value>> {
        match self.read_line(id) {
            Ok(Some(outputs)) => return Some(outputs),
            Ok(None) => {}
            Err(error) => tracing::warn!(log = %self.log.display(), %error, "cannot read kept outputs"),
        }
        let bytes = std::fs::read(self.legacy_dir.join(format!("{id}.json"))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn read_line(&self, id: &CellId) -> io::Result<Option<Vec<serde_json::Value>>> {
        let mut index = self.index.lock().expect("index lock");
        if index.is_none() {
            *index = Some(build_index(&self.log)?);
        }
        let Some(&(start, len)) = index.as_ref().and_then(|index| index.get(id)) else { return Ok(None) };
        drop(index);
        let mut bytes = vec![0; len];
        File::open(&self.log)?.read_exact_at(&mut bytes, start)?;
        let line: Line<Vec<serde_json::Value>> = serde_json::from_slice(&bytes)?;
        Ok(Some(line.outputs))
    }

    /// Forgets every kept output (the graph was cleared).
    ///
    /// # Errors
    /// When a file cannot be removed.
    pub fn clear(&self) -> io::Result<()> {
        *self.index.lock().expect("index lock") = None;
        for removed in [std::fs::remove_file(&self.log), std::fs::remove_dir_all(&self.legacy_dir)] {
            match removed {
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
        }
        Ok(())
    }
}

fn ends_with_newline(file: &File, len: u64) -> io::Result<bool> {
    let mut last = [0];
    file.read_exact_at(&mut last, len - 1)?;
    Ok(last == *b"\n")
}

/// The offset and length of every whole line in `log` that names a cell; a later line for the
/// same cell wins.
fn build_index(log: &Path) -> io::Result<Index> {
    let file = match File::open(log) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Index::new()),
        Err(error) => return Err(error),
    };
    #[derive(serde::Deserialize)]
    struct CellOnly {
        cell: CellId,
    }
    let mut reader = BufReader::new(file);
    let mut index = Index::new();
    let mut line = Vec::new();
    let mut start = 0;
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line)?;
        if read == 0 {
            return Ok(index);
        }
        if line.ends_with(b"\n") {
            let text = &line[..read - 1];
            if let Ok(CellOnly { cell }) = serde_json::from_slice(text) {
                index.insert(cell, (start, text.len()));
            }
        }
        start += read as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kept(dir: &Path) -> KeptOutputs {
        KeptOutputs::new(dir.join("cell_outputs.jsonl"), dir.join("cells"))
    }

    fn stream(text: &str) -> Vec<serde_json::Value> {
        vec![json!({"output_type": "stream", "name": "stdout", "text": text})]
    }

    #[test]
    fn outputs_are_read_back_before_and_after_the_index_exists() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (CellId::new(), CellId::new(), CellId::new());
        let store = kept(dir.path());
        store.keep(&a, &stream("a\n")).unwrap();
        store.keep(&b, &stream("b\n")).unwrap();
        assert_eq!(store.read(&b), Some(stream("b\n")));
        store.keep(&c, &stream("c\n")).unwrap();
        assert_eq!(store.read(&c), Some(stream("c\n")), "an append after the index was built");
        let reopened = kept(dir.path());
        for (id, text) in [(&a, "a\n"), (&b, "b\n"), (&c, "c\n")] {
            assert_eq!(reopened.read(id), Some(stream(text)));
        }
        assert_eq!(reopened.read(&CellId::new()), None);
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_the_next_append_starts_a_new_line() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (CellId::new(), CellId::new(), CellId::new());
        let store = kept(dir.path());
        store.keep(&a, &stream("a\n")).unwrap();
        store.keep(&b, &stream("b\n")).unwrap();
        let log = dir.path().join("cell_outputs.jsonl");
        let len = std::fs::metadata(&log).unwrap().len();
        File::options().write(true).open(&log).unwrap().set_len(len - 5).unwrap();

        let store = kept(dir.path());
        assert_eq!(store.read(&b), None, "b's line was cut short");
        store.keep(&c, &stream("c\n")).unwrap();
        let reopened = kept(dir.path());
        assert_eq!(reopened.read(&a), Some(stream("a\n")));
        assert_eq!(reopened.read(&b), None);
        assert_eq!(reopened.read(&c), Some(stream("c\n")));
    }

    #[test]
    fn outputs_of_earlier_versions_are_read_and_clear_forgets_everything() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (CellId::new(), CellId::new());
        std::fs::create_dir(dir.path().join("cells")).unwrap();
        std::fs::write(
            dir.path().join("cells").join(format!("{old}.json")),
            json!(stream("old\n")).to_string(),
        )
        .unwrap();
        let store = kept(dir.path());
        store.keep(&new, &stream("new\n")).unwrap();
        assert_eq!(store.read(&old), Some(stream("old\n")));
        assert_eq!(store.read(&new), Some(stream("new\n")));
        store.clear().unwrap();
        assert_eq!((store.read(&old), store.read(&new)), (None, None));
    }
}
