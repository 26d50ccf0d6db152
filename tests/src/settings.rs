//! One source of truth per setting: the code holds every default; a function's environment in
//! `template.yaml` holds what a deployment decides (resource names, values derived from the
//! template's own parameters, a deliberate override), never a value the code already defaults
//! to, names only variables the code reads, and is a configuration the code starts with.
//!
//! The code's side of the rule comes from the function itself: its binary, built from the
//! template's `Metadata.BuildProperties.Binary` and started in the library's check-config mode
//! ([`check_config`]), reports every variable it reads and the configuration it would run with.
//! Nothing here names a function, so adding or removing one needs no edit of this file.
//!
//! The same reading of a function's environment wires the tests: [`function_env`] gives the
//! variables as a deploy sets them, with the resources a test supplies.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};

use local_runner::host::{Target, build};
use local_runner::template::{reference, scalar_text};
use queue_worker::check::{self, Checked, Report};
use serde_yaml_ng::Value;

/// Variables of this process a function's binary gets besides the environment under check: what
/// any process needs. Nothing the code reads as a setting.
const PASSED: [&str; 1] = ["PATH"];

/// The executable of `binary` (`Metadata.BuildProperties.Binary`), built with the dev profile by
/// the local runner's builder, in the workspace's target directory (`CARGO_TARGET_DIR` when
/// set); once per test process.
///
/// # Errors
/// When cargo cannot build it (its diagnostics are on stderr).
pub fn executable(binary: &str) -> Result<PathBuf, String> {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    // Held while building: concurrent tests wait for one build instead of queueing on cargo's
    // lock with builds of their own.
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(path) = built.get_or_insert_default().get(binary) {
        return Ok(path.clone());
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // On a thread of its own, so that a caller inside a runtime (a `#[tokio::test]`) can wait.
    let path = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?
                    .block_on(build(&workspace, Target::Bin(binary), "dev", &[]))
                    .map_err(|e| e.to_string())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })?;
    built
        .get_or_insert_default()
        .insert(binary.to_owned(), path.clone());
    Ok(path)
}

/// Runs `binary` in the check-config mode (`queue_worker::check`) with `env` as its whole
/// environment (and `PATH`): the variables its code reads and the configuration it starts
/// with, or why it cannot start.
///
/// # Errors
/// The function's own error when it refuses the environment; or why it could not be built or
/// run, or answered no report.
pub fn check_config(binary: &str, env: &[(String, String)]) -> Result<Checked, String> {
    let executable = executable(binary)?;
    let output = Command::new(&executable)
        .env_clear()
        .envs(
            PASSED
                .iter()
                .filter_map(|name| std::env::var_os(name).map(|value| ((*name).to_owned(), value))),
        )
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env(check::VARIABLE, "1")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", executable.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Report = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .ok_or_else(|| {
            format!(
                "{binary} printed no check report ({}): stdout {stdout:?}, stderr {:?}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    if report.ok != output.status.success() {
        return Err(format!(
            "{binary} reported ok: {} but exited with {}",
            report.ok, output.status
        ));
    }
    report.outcome()
}

/// The environment variables `binary`'s code reads when started with `env`.
///
/// # Errors
/// As [`check_config`].
pub fn variables_read_by(
    binary: &str,
    env: &[(String, String)],
) -> Result<BTreeSet<String>, String> {
    check_config(binary, env).map(|checked| checked.read.into_iter().collect())
}

/// The configuration `binary` starts with from `env`, as text (to compare two), or its error.
fn start(binary: &str, env: &[(String, String)]) -> Result<String, String> {
    check_config(binary, env).map(|checked| checked.config)
}

/// The environment `template` gives `function`, as a deploy with the parameters' defaults sets
/// it: literals as they are, `!Ref Parameter` as its default, and every other intrinsic function
/// (`!Ref Resource`, `!GetAtt`, `!Sub`) as `resource` resolves it, or the reason it cannot.
///
/// # Panics
/// When `function` is not in the template, or a variable cannot be resolved (naming it).
pub fn function_env(
    template: &Value,
    function: &str,
    mut resource: impl FnMut(&Value) -> Result<String, String>,
) -> Vec<(String, String)> {
    let definition = &template["Resources"][function];
    assert!(definition.is_mapping(), "template.yaml has no {function}");
    definition["Properties"]["Environment"]["Variables"]
        .as_mapping()
        .into_iter()
        .flatten()
        .map(|(key, value)| {
            let key = key.as_str().unwrap_or_default();
            let value = deployed_value(template, value, &mut resource)
                .unwrap_or_else(|reason| panic!("{function}: {key}: {reason}"));
            (key.to_owned(), value)
        })
        .collect()
}

/// What a variable of the template is set to at deploy time: a literal's text, a parameter's
/// default, or what `resource` makes of an intrinsic function of the resources.
fn deployed_value(
    template: &Value,
    value: &Value,
    resource: &mut impl FnMut(&Value) -> Result<String, String>,
) -> Result<String, String> {
    if let Some(name) = reference(value) {
        let parameter = &template["Parameters"][name];
        if parameter.is_mapping() {
            return scalar_text(&parameter["Default"])
                .ok_or_else(|| format!("parameter {name} has no default"));
        }
    }
    match value {
        Value::Tagged(_) | Value::Mapping(_) => resource(value),
        other => scalar_text(other).ok_or_else(|| format!("{other:?} is not a scalar")),
    }
}

/// A stand-in for what CloudFormation resolves: enough to start the code with.
fn stand_in(value: &Value) -> Result<String, String> {
    Ok(match reference(value) {
        Some(name) => format!("resolved-{name}"),
        None => "resolved-by-cloudformation".into(),
    })
}

/// Every way the environment of function `name` (built from `binary`) breaks the rule, as the
/// function's own binary reports it ([`check_config`]).
pub fn environment_violations(
    template: &Value,
    name: &str,
    binary: &str,
    variables: &Value,
) -> Vec<String> {
    let mut found = Vec::new();
    let mut env = Vec::new();
    for (key, value) in variables.as_mapping().into_iter().flatten() {
        let Some(key) = key.as_str() else {
            continue;
        };
        match deployed_value(template, value, &mut stand_in) {
            Ok(value) => env.push((key.to_owned(), value)),
            Err(reason) => found.push(format!("{name}: {key}: {reason}")),
        }
    }
    if let Err(error) = executable(binary) {
        found.push(format!(
            "{name}: cannot build its binary {binary:?}: {error}"
        ));
        return found;
    }
    let started = match check_config(binary, &env) {
        Ok(checked) => checked,
        Err(error) => {
            found.push(format!(
                "{name}: the code cannot start with the template's environment: {error}"
            ));
            return found;
        }
    };
    for (key, _) in &env {
        if !started.read.contains(key) {
            found.push(format!(
                "{name}: the template sets {key} but the code never reads it"
            ));
        }
    }
    // A literal the code would take anyway is a second source of truth for its default.
    for (key, value) in variables.as_mapping().into_iter().flatten() {
        let Some(key) = key.as_str() else {
            continue;
        };
        if matches!(value, Value::Tagged(_) | Value::Mapping(_)) {
            continue;
        }
        let without: Vec<_> = env.iter().filter(|(k, _)| k != key).cloned().collect();
        if start(binary, &without).as_ref() == Ok(&started.config) {
            found.push(format!(
                "{name}: the template sets {key} to the code's default; the code is the one \
                 source of truth for it (delete the line)"
            ));
        }
    }
    found
}
