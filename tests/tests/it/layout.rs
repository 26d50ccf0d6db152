//! The layout a fork relies on.
//!
//! - The library is a library: `shared/queue-worker` depends on no crate of an example and names
//!   nothing of its domain, so a fork swaps the domain without touching it.
//! - An example is found by its name: each domain NAME (a tooling crate `tests/domains/NAME`)
//!   owns the crates whose path contains NAME, and only files whose path contains NAME use them.
//!   Deleting those paths (README "Fork it") removes the example and leaves a workspace that
//!   builds.

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
    // Every other crate of the workspace: the examples, their tooling, the runner, the ops CLI.
    let others: Vec<String> = workspace_crates()
        .into_iter()
        .filter(|c| c.dir != "shared/queue-worker")
        .map(|c| c.package)
        .collect();
    assert!(others.len() > 3, "found the workspace's crates: {others:?}");
    for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
        let Some(dependencies) = manifest.get(section).and_then(|d| d.as_table()) else {
            continue;
        };
        for member in &others {
            assert!(
                !dependencies.contains_key(member),
                "the library's {section} name the workspace crate {member}"
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

/// A crate of the workspace: its path from the root, package name and library name.
struct Crate {
    dir: String,
    package: String,
    lib: String,
}

fn workspace_crates() -> Vec<Crate> {
    let root = workspace();
    let mut manifests = Vec::new();
    files(&root, &mut manifests);
    manifests
        .into_iter()
        .filter(|path| path.file_name().is_some_and(|name| name == "Cargo.toml"))
        .filter(|path| !skipped(&relative(path)))
        .filter_map(|path| {
            let manifest: toml::Table = std::fs::read_to_string(&path).ok()?.parse().ok()?;
            let package = manifest.get("package")?.get("name")?.as_str()?.to_owned();
            let lib = manifest
                .get("lib")
                .and_then(|lib| lib.get("name"))
                .and_then(|name| name.as_str())
                .map_or_else(|| package.replace('-', "_"), str::to_owned);
            let dir = relative(path.parent()?);
            Some(Crate { dir, package, lib })
        })
        .collect()
}

fn relative(path: &Path) -> String {
    path.strip_prefix(workspace())
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// Build output, virtualenvs, VCS data and other generated trees: not part of the layout.
fn skipped(relative: &str) -> bool {
    relative
        .split('/')
        .any(|part| part == "target" || part.starts_with('.'))
}

/// The domains: the directories under `tests/domains/`.
fn domains() -> Vec<String> {
    std::fs::read_dir(workspace().join("tests/domains"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|entry| entry.path().is_dir())
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Where `text` (a Rust source or a manifest) uses `krate`, as `line N`.
fn uses_of(text: &str, manifest: bool, krate: &Crate) -> Vec<String> {
    let path = format!("{}::", krate.lib);
    let use_line = format!("use {}", krate.lib);
    let dependency = [
        format!("{} =", krate.package),
        format!("{}.", krate.package),
        format!("package = \"{}\"", krate.package),
    ];
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.trim_start();
        let named = if manifest {
            dependency
                .iter()
                .any(|form| code.starts_with(form.as_str()) || code.contains(&dependency[2]))
        } else {
            !code.starts_with("//") && (code.starts_with(&use_line) || contains_path(code, &path))
        };
        if named {
            found.push(format!("line {}", n + 1));
        }
    }
    found
}

/// Whether `line` holds the path prefix `path` (`name::`) as a whole word.
fn contains_path(line: &str, path: &str) -> bool {
    line.match_indices(path).any(|(at, _)| {
        !line[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// Files outside a domain's paths that still use its crates, each with the work that removes
/// it. The test fails when this list and the tree differ, either way.
const NOT_YET_MOVED: &[&str] = &[];

#[test]
fn only_the_paths_of_a_domain_use_its_crates() {
    let crates = workspace_crates();
    let mut all = Vec::new();
    files(&workspace(), &mut all);
    let mut violations = Vec::new();
    let mut users = std::collections::BTreeSet::new();
    for domain in domains() {
        let owned: Vec<&Crate> = crates.iter().filter(|c| c.dir.contains(&domain)).collect();
        assert!(
            !owned.is_empty(),
            "tests/domains/{domain} is a domain without crates"
        );
        for path in &all {
            let name = relative(path);
            let manifest = name.ends_with("Cargo.toml");
            // This file names crates as the check's own test data.
            let this_check = name == "tests/tests/it/layout.rs";
            if skipped(&name)
                || this_check
                || name.contains(&domain)
                || !(manifest || name.ends_with(".rs"))
            {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(path) else {
                continue;
            };
            for krate in &owned {
                for at in uses_of(&text, manifest, krate) {
                    users.insert(name.clone());
                    violations.push(format!(
                        "{name} {at}: uses {} of domain {domain}",
                        krate.package
                    ));
                }
            }
        }
    }
    let expected: std::collections::BTreeSet<String> =
        NOT_YET_MOVED.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(
        users,
        expected,
        "files outside a domain's paths that use its crates:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_crate_use_check_finds_what_it_looks_for() {
    let krate = Crate {
        dir: "functions/import-processor".into(),
        package: "import-processor".into(),
        lib: "import_processor".into(),
    };
    let rust = "use import_processor::Parts;\nlet x = import_processor::f();\n// import_processor::doc\nmy_import_processor::g();\nuse import_processor_extra;";
    assert_eq!(uses_of(rust, false, &krate), ["line 1", "line 2", "line 5"]);
    let manifest = "[dependencies]\nimport-processor = { path = \"x\" }\nharness = { package = \"import-processor\" }\nimport-processor-extra = 1";
    assert_eq!(uses_of(manifest, true, &krate), ["line 2", "line 3"]);
}
