//! NOTES.md is the index of the semantic rules: every test it names must
//! exist, where it says, as a test. Run by `cargo test` (so by CI): a rule
//! whose test was renamed or removed fails here.
//!
//! A reference is written `` `<file>.rs::<test>` ``: `<file>` is a test
//! file of the root crate (`tests/<file>.rs`) or, prefixed `glue/`, of the
//! async glue (`async-glue/tests/<file>.rs`); a test in a library module
//! is written `src/<path>.rs::<test>`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Every `` `x.rs::name` `` reference in `text`.
fn references(text: &str) -> BTreeSet<(String, String)> {
    let mut refs = BTreeSet::new();
    for piece in text.split('`').skip(1).step_by(2) {
        let Some((file, test)) = piece.split_once(".rs::") else {
            continue;
        };
        let ident = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '/')
        };
        if ident(file) && ident(test) && !test.contains('/') {
            refs.insert((format!("{file}.rs"), test.to_string()));
        }
    }
    refs
}

fn file_of(root: &Path, file: &str) -> PathBuf {
    if let Some(glue) = file.strip_prefix("glue/") {
        root.join("async-glue/tests").join(glue)
    } else if file.starts_with("src/") {
        root.join(file)
    } else {
        root.join("tests").join(file)
    }
}

/// True if `source` defines `fn test` marked as a test (`#[test]`, or
/// inside a `proptest!` block).
fn defines_test(source: &str, test: &str) -> bool {
    let def = format!("fn {test}(");
    let Some(at) = source.find(&def) else {
        return false;
    };
    // The attribute is on one of the few lines before the definition.
    let before = &source[..at];
    let recent: Vec<&str> = before.lines().rev().take(4).collect();
    recent.iter().any(|l| l.trim() == "#[test]") || before.contains("proptest! {")
}

#[test]
fn every_test_notes_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let notes = fs::read_to_string(root.join("NOTES.md")).expect("NOTES.md");
    let refs = references(&notes);
    assert!(refs.len() > 200, "only {} references found", refs.len());
    let mut missing = Vec::new();
    for (file, test) in &refs {
        let path = file_of(root, file);
        match fs::read_to_string(&path) {
            Ok(source) if defines_test(&source, test) => {}
            Ok(_) => missing.push(format!("{file}::{test} (no such test)")),
            Err(_) => missing.push(format!("{file}::{test} (no file {})", path.display())),
        }
    }
    assert!(
        missing.is_empty(),
        "NOTES.md names tests that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn references_are_read_from_backticks_only() {
    let refs = references("a `rt.rs::x_y` b `glue/pipes.rs::z` `not a ref` rt.rs::bare");
    let want: BTreeSet<_> = [("rt.rs", "x_y"), ("glue/pipes.rs", "z")]
        .into_iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect();
    assert_eq!(refs, want);
}
