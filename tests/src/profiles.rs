//! The panic strategy of the Cargo profiles the functions are built with for Lambda, as a function
//! from the workspace manifest and `template.yaml` to the list of violations, so tests can run it
//! on the real files (no violation) and on mutated copies (each mutation caught).
//!
//! The batch processor isolates a record that panics by catching the unwind; with
//! `panic = "abort"` the whole execution environment dies instead, and every record of the batch
//! comes back. `sam build` builds each `rust-cargolambda` function with
//! `cargo lambda build --release`, plus the function's `BuildProperties.Flags` (which may name
//! another `--profile`); without `--release` (a debug `sam build`) it uses the `dev` profile.
//! cargo-lambda adds `--config profile.release.panic="abort"` whenever the release profile does
//! not set `panic` itself, so the release profile has to say `unwind` out loud, although that is
//! Cargo's default.

use serde_yaml_ng::Value;
use toml::Table;

/// Reads the workspace's `Cargo.toml`.
pub fn load_manifest() -> Table {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let text = std::fs::read_to_string(path).expect("Cargo.toml exists");
    text.parse().expect("Cargo.toml is valid TOML")
}

/// Every profile that builds a function for Lambda whose panics would not unwind, given the
/// workspace `manifest` and the SAM `template`.
pub fn panic_violations(manifest: &Table, template: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let profiles = manifest.get("profile").and_then(toml::Value::as_table);
    let release_panic = profiles
        .and_then(|p| p.get("release"))
        .and_then(|release| release.get("panic"))
        .and_then(toml::Value::as_str);
    if release_panic.is_none() {
        found.push(
            "[profile.release] must set panic = \"unwind\" explicitly: without it, \
             cargo-lambda builds with panic = \"abort\""
                .to_owned(),
        );
    }

    let mut built_with = vec![("debug sam build".to_owned(), "dev".to_owned())];
    for (name, function) in functions(template) {
        built_with.push((name.clone(), "release".to_owned()));
        if let Some(profile) = profile_flag(&function["Metadata"]["BuildProperties"]["Flags"]) {
            built_with.push((name, profile));
        }
    }
    for (builder, profile) in built_with {
        match panic_strategy(profiles, &profile) {
            Ok(strategy) if strategy == "unwind" => {}
            Ok(strategy) => found.push(format!(
                "{builder}: profile {profile} builds with panic = {strategy:?}, not \"unwind\""
            )),
            Err(problem) => found.push(format!("{builder}: profile {profile} {problem}")),
        }
    }
    found.sort();
    found.dedup();
    found
}

/// The functions `sam build` builds with cargo-lambda, by logical id.
fn functions(template: &Value) -> Vec<(String, &Value)> {
    template["Resources"]
        .as_mapping()
        .into_iter()
        .flatten()
        .filter(|(_, resource)| {
            resource["Type"].as_str() == Some("AWS::Serverless::Function")
                && resource["Metadata"]["BuildMethod"].as_str() == Some("rust-cargolambda")
        })
        .map(|(name, resource)| (name.as_str().unwrap_or("?").to_owned(), resource))
        .collect()
}

/// The profile named by `--profile NAME` or `--profile=NAME` among cargo-lambda flags.
fn profile_flag(flags: &Value) -> Option<String> {
    let flags: Vec<&str> = match flags {
        Value::Sequence(items) => items.iter().filter_map(Value::as_str).collect(),
        Value::String(text) => text.split_whitespace().collect(),
        _ => Vec::new(),
    };
    let mut flags = flags.into_iter();
    while let Some(flag) = flags.next() {
        if flag == "--profile" {
            return flags.next().map(str::to_owned);
        }
        if let Some(name) = flag.strip_prefix("--profile=") {
            return Some(name.to_owned());
        }
    }
    None
}

/// The panic strategy `profile` resolves to, following `inherits` down to Cargo's built-in
/// profiles (whose default is `unwind`).
fn panic_strategy(profiles: Option<&Table>, profile: &str) -> Result<String, String> {
    let mut name = profile.to_owned();
    let mut seen = Vec::new();
    loop {
        let section = profiles.and_then(|p| p.get(&name));
        if let Some(strategy) = section.and_then(|s| s.get("panic")) {
            return strategy
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("has a panic setting that is not a string: {strategy:?}"));
        }
        let inherits = section
            .and_then(|s| s.get("inherits"))
            .and_then(toml::Value::as_str);
        match (name.as_str(), inherits) {
            ("dev" | "release" | "test" | "bench", _) => return Ok("unwind".to_owned()),
            (_, Some(parent)) if !seen.contains(&parent.to_owned()) => {
                seen.push(name);
                name = parent.to_owned();
            }
            (_, Some(_)) => return Err("inherits in a cycle".to_owned()),
            (_, None) if section.is_none() => return Err("is not defined in Cargo.toml".into()),
            (_, None) => return Err("does not say which profile it inherits".into()),
        }
    }
}
