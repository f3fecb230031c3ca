//! NOTES.md is the index of the semantic rules; the rules themselves are
//! stated in the rustdoc of their modules, each under its number as
//! `**N. claim**`. Run by `cargo test` (so by CI), this checks both ways:
//!
//! - every rule of the index (`- **N** claim — tests — [path](path)`)
//!   names at least one test, every test it names exists as a test, and
//!   the module it links exists and states rule N;
//! - every rule a module doc states is in the index, linked to that
//!   module, and no number is stated twice.
//!
//! A test reference is written `` `<file>.rs::<test>` ``: `<file>` is a
//! test file of the root crate (`tests/<file>.rs`) or, prefixed `glue/`, of
//! the async glue (`async-glue/tests/<file>.rs`) or, prefixed `ui/`, of the
//! compiler-message tests (`ui-tests/tests/<file>.rs`); a test in a library
//! module is written `src/<path>.rs::<test>`. A rule checked by a CI
//! script instead names the script (`` `async-glue/valgrind.sh` ``).

use std::collections::{BTreeMap, BTreeSet};
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
    } else if let Some(ui) = file.strip_prefix("ui/") {
        root.join("ui-tests/tests").join(ui)
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

/// One line of the index: `- **N** claim — refs — [path](path)`.
#[derive(Debug)]
struct Entry {
    number: String,
    line: String,
    module: String,
}

fn entries(notes: &str) -> Vec<Entry> {
    notes
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("- **")?;
            let (number, rest) = rest.split_once("** ")?;
            let module = rest.rsplit_once("](")?.1.strip_suffix(')')?;
            Some(Entry {
                number: number.to_string(),
                line: line.to_string(),
                module: module.to_string(),
            })
        })
        .collect()
}

/// The rule numbers a source file's doc comments state (`//! **N. `).
fn stated_rules(source: &str) -> Vec<String> {
    source
        .lines()
        .filter_map(|l| {
            let rest = l.trim_start().strip_prefix("//! **")?;
            let (number, _) = rest.split_once(". ")?;
            let digits = number.trim_end_matches(|c: char| c.is_ascii_lowercase());
            (!digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()))
                .then(|| number.to_string())
        })
        .collect()
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("source dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn notes() -> String {
    fs::read_to_string(root().join("NOTES.md")).expect("NOTES.md")
}

/// Fails listing `problems`, if there are any.
fn assert_none(what: &str, problems: &[String]) {
    assert!(problems.is_empty(), "{what}:\n{}", problems.join("\n"));
}

/// Why `file::test` does not name a test, if it does not.
fn missing_test(file: &str, test: &str) -> Option<String> {
    let path = file_of(root(), file);
    match fs::read_to_string(&path) {
        Ok(source) if defines_test(&source, test) => None,
        Ok(_) => Some(format!("{file}::{test} (no such test)")),
        Err(_) => Some(format!("{file}::{test} (no file {})", path.display())),
    }
}

#[test]
fn every_test_notes_names_exists() {
    let refs = references(&notes());
    assert!(refs.len() > 200, "only {} references found", refs.len());
    let missing: Vec<String> = refs
        .iter()
        .filter_map(|(file, test)| missing_test(file, test))
        .collect();
    assert_none("NOTES.md names tests that do not exist", &missing);
}

#[test]
fn every_indexed_rule_names_a_test_and_a_module_doc_that_states_it() {
    let root = root();
    let entries = entries(&notes());
    assert!(entries.len() > 100, "only {} rules indexed", entries.len());
    let mut wrong = Vec::new();
    let mut seen = BTreeSet::new();
    for e in &entries {
        if !seen.insert(e.number.clone()) {
            wrong.push(format!("rule {} is indexed twice", e.number));
        }
        let script = e
            .line
            .split('`')
            .skip(1)
            .step_by(2)
            .any(|p| p.ends_with(".sh") && root.join(p).is_file());
        if references(&e.line).is_empty() && !script {
            wrong.push(format!("rule {} names no test", e.number));
        }
        match fs::read_to_string(root.join(&e.module)) {
            Ok(source) if stated_rules(&source).contains(&e.number) => {}
            Ok(_) => wrong.push(format!("rule {}: {} does not state it", e.number, e.module)),
            Err(_) => wrong.push(format!("rule {}: no module {}", e.number, e.module)),
        }
    }
    assert_none("NOTES.md", &wrong);
}

#[test]
fn every_rule_a_module_doc_states_is_indexed_once() {
    let root = root();
    let indexed: BTreeMap<String, String> = entries(&notes())
        .into_iter()
        .map(|e| (e.number, e.module))
        .collect();
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    sources(&root.join("async-glue/src"), &mut files);
    let mut stated: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for path in files {
        let source = fs::read_to_string(&path).expect("source");
        let rel = path
            .strip_prefix(root)
            .expect("under the root")
            .to_string_lossy()
            .into_owned();
        for n in stated_rules(&source) {
            stated.entry(n).or_default().push(rel.clone());
        }
    }
    let mut wrong = Vec::new();
    for (n, files) in &stated {
        if files.len() > 1 {
            wrong.push(format!("rule {n} is stated in {files:?}"));
        }
        match indexed.get(n) {
            Some(m) if files.contains(m) => {}
            Some(m) => wrong.push(format!("rule {n} is indexed at {m}, stated in {files:?}")),
            None => wrong.push(format!("rule {n} (in {files:?}) is not in NOTES.md")),
        }
    }
    assert_none("module docs", &wrong);
}

#[test]
fn references_entries_and_rule_tags_are_read_exactly() {
    let refs = references("a `rt.rs::x_y` b `glue/pipes.rs::z` `not a ref` rt.rs::bare");
    let want: BTreeSet<_> = [("rt.rs", "x_y"), ("glue/pipes.rs", "z")]
        .into_iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect();
    assert_eq!(refs, want);
    let e = entries("- **16a** A claim — `links.rs::t` — [src/cause.rs](src/cause.rs)\n- not");
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].number.as_str(), e[0].module.as_str()),
        ("16a", "src/cause.rs")
    );
    let tags = stated_rules("//! **39. A task** x\n//! **Flow control.** y\n    //! **51a. T**");
    assert_eq!(tags, ["39", "51a"]);
}
