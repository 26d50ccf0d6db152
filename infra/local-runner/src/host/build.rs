//! Building a function's binary with cargo, in the workspace's own target directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

use super::HostError;

/// A target of `cargo build`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// `--bin NAME`: what `Metadata.BuildProperties.Binary` names.
    Bin(&'a str),
    /// `--example NAME`: test fixtures.
    Example(&'a str),
}

impl Target<'_> {
    fn name(self) -> String {
        match self {
            Self::Bin(name) | Self::Example(name) => (*name).to_owned(),
        }
    }
}

/// Builds `target` with `profile` (`dev`, `release`, ...) and cargo `features` (`pkg/feature`,
/// none for the function's own build) in the workspace at `workspace`, and returns the
/// executable's path. Cargo's progress and diagnostics go to stderr.
///
/// A build with features returns a copy of the executable beside cargo's
/// (`NAME-with-features`), put in place by a rename: a later build without them replaces
/// cargo's file, not the one hosted processes are started from.
pub async fn build(
    workspace: &Path,
    target: Target<'_>,
    profile: &str,
    features: &[&str],
) -> Result<PathBuf, HostError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let (flag, name) = match target {
        Target::Bin(name) => ("--bin", name),
        Target::Example(name) => ("--example", name),
    };
    let mut child = Command::new(cargo)
        .args([
            "build",
            "--message-format=json-render-diagnostics",
            "--profile",
            profile,
        ])
        .args([flag, name])
        .args(features.iter().flat_map(|feature| ["--features", feature]))
        .current_dir(workspace)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(HostError::Cargo)?;
    let mut executable = None;
    if let Some(stdout) = child.stdout.take() {
        let mut lines = BufReader::new(stdout).lines();
        while let Some(line) = lines.next_line().await.map_err(HostError::Cargo)? {
            executable = executable.or_else(|| artifact(&line, name));
        }
    }
    let status = child.wait().await.map_err(HostError::Cargo)?;
    if !status.success() {
        return Err(HostError::Build {
            target: target.name(),
            status,
        });
    }
    let executable = executable.ok_or_else(|| HostError::NoExecutable(target.name()))?;
    if features.is_empty() {
        return Ok(executable);
    }
    let copy = executable.with_file_name(format!("{name}-with-features"));
    let partial = executable.with_file_name(format!("{name}-with-features.{}", std::process::id()));
    tokio::fs::copy(&executable, &partial)
        .await
        .map_err(HostError::Cargo)?;
    tokio::fs::rename(&partial, &copy)
        .await
        .map_err(HostError::Cargo)?;
    Ok(copy)
}

/// The executable of `name` if `line` (one of cargo's JSON messages) announces it.
fn artifact(line: &str, name: &str) -> Option<PathBuf> {
    let message: Value = serde_json::from_str(line).ok()?;
    if message["reason"] != "compiler-artifact" || message["target"]["name"] != name {
        return None;
    }
    message["executable"].as_str().map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_executable_is_read_from_the_artifact_message_of_the_target() {
        let line = r#"{"reason":"compiler-artifact","target":{"name":"notifier","kind":["bin"]},"executable":"/t/debug/notifier"}"#;
        assert_eq!(
            artifact(line, "notifier"),
            Some(PathBuf::from("/t/debug/notifier"))
        );
        assert_eq!(artifact(line, "import-processor"), None);
        let library = r#"{"reason":"compiler-artifact","target":{"name":"notifier","kind":["lib"]},"executable":null}"#;
        assert_eq!(artifact(library, "notifier"), None);
        assert_eq!(
            artifact(r#"{"reason":"build-finished","success":true}"#, "notifier"),
            None
        );
        assert_eq!(artifact("not json", "notifier"), None);
    }
}
