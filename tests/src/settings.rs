//! One source of truth per setting: the code holds every default; a function's environment in
//! `template.yaml` holds what a deployment decides (resource names, values derived from the
//! template's own parameters, a deliberate override), never a value the code already defaults
//! to, names only variables the code reads, and is a configuration the code starts with.
//!
//! The same reading of a function's environment wires the tests: [`function_env`] gives the
//! variables as a deploy sets them, with the resources a test supplies.

use std::collections::BTreeSet;

use local_runner::template::{reference, scalar_text};
use queue_worker::Env;
use serde_yaml_ng::Value;

/// Variables the library reads outside a configuration struct (the trust store, the log
/// filter): any function may set them, and no default of theirs lives in a struct.
const LIBRARY: [&[&str]; 3] = [
    &[queue_worker::aws::CA_BUNDLE_VARIABLE],
    queue_worker::telemetry::VARIABLES,
    queue_worker::config::SdkTimeouts::VARIABLES,
];

/// The environment variables a function's code reads, by the `Binary` it is built from.
pub fn variables_read_by(binary: &str) -> Option<BTreeSet<&'static str>> {
    let lists: Vec<&[&str]> = match binary {
        "import-producer" => vec![import_producer::ProducerConfig::VARIABLES],
        "import-processor" => vec![
            import_processor::ProcessorConfig::VARIABLES,
            queue_worker::lambda::WorkerSettings::VARIABLES,
            queue_worker::config::GuardConfig::VARIABLES,
            queue_worker::batch::BatchSettings::VARIABLES,
            queue_worker::protection::DependencySettings::VARIABLES,
        ],
        "notifier" => vec![
            notifier::NotifierConfig::VARIABLES,
            queue_worker::lambda::WorkerSettings::VARIABLES,
            queue_worker::config::GuardConfig::VARIABLES,
            queue_worker::batch::BatchSettings::VARIABLES,
            queue_worker::protection::DependencySettings::VARIABLES,
        ],
        _ => return None,
    };
    Some(
        lists
            .into_iter()
            .chain(LIBRARY)
            .flatten()
            .copied()
            .collect(),
    )
}

/// Reads the configuration of `binary` from `env` as its `main` does: the configuration as
/// text (to compare two), or the error as text.
fn start(binary: &str, env: &Env) -> Result<String, String> {
    match binary {
        "import-producer" => import_producer::ProducerConfig::from_env(env)
            .map(|config| format!("{config:?}"))
            .map_err(|e| e.to_string()),
        "import-processor" => import_processor::ProcessorConfig::from_env(env)
            .map(|config| format!("{config:?}"))
            .map_err(|e| e.to_string()),
        "notifier" => {
            queue_worker::lambda::WorkerSettings::for_worker::<notifier::ProductionNotifier>(env)
                .and_then(|worker| Ok((worker, notifier::NotifierConfig::from_env(env)?)))
                .map(|config| format!("{config:?}"))
                .map_err(|e| e.to_string())
        }
        _ => Err(format!("unknown binary {binary:?}")),
    }
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

/// Every way the environment of function `name` (built from `binary`) breaks the rule.
pub fn environment_violations(
    template: &Value,
    name: &str,
    binary: &str,
    variables: &Value,
) -> Vec<String> {
    let mut found = Vec::new();
    let Some(read) = variables_read_by(binary) else {
        return vec![format!("{name}: builds unknown binary {binary:?}")];
    };
    let mut env = Vec::new();
    for (key, value) in variables.as_mapping().into_iter().flatten() {
        let Some(key) = key.as_str() else {
            continue;
        };
        if !read.contains(key) {
            found.push(format!(
                "{name}: the template sets {key} but the code never reads it"
            ));
        }
        match deployed_value(template, value, &mut stand_in) {
            Ok(value) => env.push((key.to_owned(), value)),
            Err(reason) => found.push(format!("{name}: {key}: {reason}")),
        }
    }
    let started = match start(binary, &Env::from_pairs(env.clone())) {
        Ok(config) => config,
        Err(error) => {
            found.push(format!(
                "{name}: the code cannot start with the template's environment: {error}"
            ));
            return found;
        }
    };
    // A literal the code would take anyway is a second source of truth for its default.
    for (key, value) in variables.as_mapping().into_iter().flatten() {
        let Some(key) = key.as_str() else {
            continue;
        };
        if matches!(value, Value::Tagged(_) | Value::Mapping(_)) || LIBRARY.concat().contains(&key)
        {
            continue;
        }
        let without = env.iter().filter(|(k, _)| k != key).cloned();
        if start(binary, &Env::from_pairs(without)).as_ref() == Ok(&started) {
            found.push(format!(
                "{name}: the template sets {key} to the code's default; the code is the one \
                 source of truth for it (delete the line)"
            ));
        }
    }
    found
}
