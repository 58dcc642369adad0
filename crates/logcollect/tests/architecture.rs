//! `ARCHITECTURE.md` at the repository root names every source file of the
//! core, and every file it names exists: the map cannot rot silently.

use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../ARCHITECTURE.md");

/// The `.rs` files under `dir`, as paths relative to `root` with `/`.
fn sources(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("read the source directory") {
        let path: PathBuf = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).expect("under the root");
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// The backquoted words of the "Files of the core" section that name a
/// `.rs` file.
fn named_files(doc: &str) -> Vec<String> {
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("Files of the core"))
        .expect("ARCHITECTURE.md has a section \"Files of the core\"");
    section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| w.ends_with(".rs") && !w.contains(' '))
        .map(str::to_owned)
        .collect()
}

#[test]
fn architecture_md_names_every_source_file() {
    let doc = std::fs::read_to_string(DOC).expect("ARCHITECTURE.md at the repository root");
    let named = named_files(&doc);
    let mut files = Vec::new();
    sources(Path::new(SRC), Path::new(SRC), &mut files);
    files.sort();
    assert!(files.len() > 20, "found only {files:?}");
    let missing: Vec<&String> = files.iter().filter(|f| !named.contains(f)).collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md (\"Files of the core\") does not name {missing:?}: add one line each"
    );
    let stale: Vec<&String> = named.iter().filter(|n| !files.contains(n)).collect();
    assert!(
        stale.is_empty(),
        "ARCHITECTURE.md names files that do not exist: {stale:?}"
    );
}
