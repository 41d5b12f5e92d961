//! The documents hold to the code: every event the code emits has its row in the log table
//! of README.md and README.zh-CN.md, ARCHITECTURE.md's code fences are balanced (an unclosed
//! fence renders the rest of the file as one block), and every file it names is in the tree.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `.rs` files below `dir`, into `into`.
pub(crate) fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.map(|e| e.path()).unwrap_or_default();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// The `event = "..."` names in `src/`.
fn emitted() -> BTreeSet<String> {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut events = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (at, _) in text.match_indices("event = \"") {
            let rest = &text[at + "event = \"".len()..];
            let name = rest.split('"').next().unwrap_or_default();
            let event_like =
                |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.';
            if name.starts_with(|c: char| c.is_ascii_lowercase()) && name.chars().all(event_like) {
                events.insert(name.to_string());
            }
        }
    }
    events
}

/// The first column of the table under `header` in `file`.
fn table(file: &str, header: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join(file)).unwrap_or_default();
    let start = text
        .find(header)
        .unwrap_or_else(|| panic!("{file}: no table headed {header:?}"));
    text[start..]
        .lines()
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .filter_map(|line| line.split('`').nth(1))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_emitted_event_is_in_both_readmes_log_tables() {
    let events = emitted();
    assert!(events.len() > 50, "found only {events:?}");
    for (file, header) in [
        ("README.md", "| event | level | fields | when |"),
        ("README.zh-CN.md", "| event | 级别 | 字段 | 何时 |"),
    ] {
        let listed = table(file, header);
        let missing: Vec<&String> = events.difference(&listed).collect();
        assert!(
            missing.is_empty(),
            "{file}: events missing from the log table: {missing:?}"
        );
        let stale: Vec<&String> = listed.difference(&events).collect();
        assert!(
            stale.is_empty(),
            "{file}: the log table lists events nothing emits: {stale:?}"
        );
    }
}

#[test]
fn architectures_code_fences_are_balanced() {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap_or_default();
    let fences = text
        .lines()
        .filter(|line| line.trim_start().starts_with("```"))
        .count();
    assert!(
        fences > 0 && fences % 2 == 0,
        "{fences} fences in ARCHITECTURE.md"
    );
}

/// The file names ARCHITECTURE.md gives in backticks (`store/queue.rs`, `model.rs`,
/// `tests/common/`), each as written.
fn named_files(text: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        // Not URL paths (`/_sim/`) or templates.
        .filter(|token| !token.starts_with('/') && !token.contains([' ', '{', ':']))
        .filter(|token| token.ends_with(".rs") || token.ends_with('/'))
        .map(str::to_string)
        .collect()
}

/// Whether `name` (a path from the root, from `src/`, or a bare file name found anywhere in
/// `src/`, `tests/` or `benches/`) is in the tree.
fn in_tree(name: &str, files: &[PathBuf]) -> bool {
    let root = root();
    let trimmed = name.trim_end_matches('/');
    if root.join(trimmed).exists() || root.join("src").join(trimmed).exists() {
        return true;
    }
    // A path given below its section's folder (`plan/pull.rs` under `src/sync/`).
    let tail = format!("/{trimmed}");
    files.iter().any(|f| {
        f.to_string_lossy().ends_with(&tail)
            || f.parent()
                .is_some_and(|p| p.to_string_lossy().ends_with(&tail))
    })
}

#[test]
fn architecture_names_only_files_that_exist() {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap_or_default();
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches"] {
        rust_files(&root().join(dir), &mut files);
    }
    let missing: Vec<String> = named_files(&text)
        .into_iter()
        .filter(|name| !in_tree(name, &files))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names files the tree does not have: {missing:?}"
    );
}
