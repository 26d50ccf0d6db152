//! The library is a library: `shared/queue-worker` depends on no crate of the example and names
//! nothing of its domain, so a fork swaps the domain without touching it.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

fn files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files(&path, found);
        } else {
            found.push(path);
        }
    }
}

/// The words of the example domain, as whole words in any case.
const DOMAIN_WORDS: &[&str] = &[
    "import",
    "imports",
    "importid",
    "import_id",
    "sku",
    "skus",
    "upload",
    "uploads",
    "catalogue",
    "producer's",
    "csv",
    "ndjson",
];

/// Where `text` uses a domain word, as `word (line N)`.
fn domain_words(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        // `use` lines name Rust's own keyword-like paths; a domain crate would show up in the
        // manifest check instead.
        if line.trim_start().starts_with("use ") {
            continue;
        }
        let lower = line.to_lowercase();
        for word in lower.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '\'')) {
            if DOMAIN_WORDS.contains(&word) {
                found.push(format!("{word} (line {})", n + 1));
            }
        }
    }
    found
}

#[test]
fn the_library_depends_on_no_crate_of_the_example() {
    let manifest = std::fs::read_to_string(workspace().join("shared/queue-worker/Cargo.toml"))
        .expect("the library's manifest");
    let manifest: toml::Table = manifest.parse().expect("valid TOML");
    let members = [
        "imports",
        "import-processor",
        "import-producer",
        "local-runner",
        "queue-ops",
    ];
    for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
        let Some(dependencies) = manifest.get(section).and_then(|d| d.as_table()) else {
            continue;
        };
        for member in members {
            assert!(
                !dependencies.contains_key(member),
                "the library's {section} name the example crate {member}"
            );
        }
    }
}

#[test]
fn the_library_names_nothing_of_the_example_domain() {
    let mut found = Vec::new();
    files(&workspace().join("shared/queue-worker"), &mut found);
    let mut uses = Vec::new();
    for path in found {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for word in domain_words(&text) {
            uses.push(format!("{}: {word}", path.display()));
        }
    }
    assert!(
        uses.is_empty(),
        "domain words in the library:\n{}",
        uses.join("\n")
    );
}

#[test]
fn the_domain_word_check_finds_what_it_looks_for() {
    assert_eq!(
        domain_words("let sku = 1;\n// Imports are fine\nfn important() {}\nuse imports::X;"),
        ["sku (line 1)", "imports (line 2)"]
    );
}
