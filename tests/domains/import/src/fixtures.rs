//! Fixtures of the import example's tests and benches: its tables, and the processor's
//! configuration wired as the template wires it.

use imports::import_attributes;
use local_runner::template::reference;

use harness::{create_table, settings, template};

/// Creates an imports table (on-demand, string key [`import_attributes::ID`]) and returns its
/// name.
pub async fn create_imports_table(client: &aws_sdk_dynamodb::Client, prefix: &str) -> String {
    create_table(client, prefix, import_attributes::ID).await
}

/// Creates an items table (on-demand, string key `sku`) and returns its name.
pub async fn create_items_table(client: &aws_sdk_dynamodb::Client, prefix: &str) -> String {
    create_table(client, prefix, "sku").await
}

/// The processor's configuration for a test's own resources, wired as `template.yaml` wires
/// `ProcessorFunction` ([`settings::function_env`]): a variable that names a resource gets
/// what `resources` gives for its logical id (a table's or bucket's name, a queue's URL), every
/// other the template's value with the parameters' defaults; then `overrides`. Read as Lambda
/// reads it (`ProcessorConfig::from_env`), so a setting neither sets is the code's default.
/// Objects must be under the template's default `UploadPrefix` (`uploads/`).
///
/// # Panics
/// When the environment names a resource `resources` lacks, or `resources` holds one it does
/// not name.
pub fn processor_config(
    resources: &[(&str, &str)],
    overrides: &[(&str, &str)],
) -> import_processor::ProcessorConfig {
    const FUNCTION: &str = "ProcessorFunction";
    let mut unused: Vec<&str> = resources.iter().map(|(id, _)| *id).collect();
    let mut env = settings::function_env(&template::load(), FUNCTION, |value| {
        let id = reference(value)
            .ok_or_else(|| format!("the harness supplies resources by !Ref only, not {value:?}"))?;
        unused.retain(|unused| *unused != id);
        resources
            .iter()
            .find(|(supplied, _)| *supplied == id)
            .map(|(_, physical)| (*physical).to_owned())
            .ok_or_else(|| format!("references {id}, which the test does not supply"))
    });
    assert!(
        unused.is_empty(),
        "{FUNCTION}'s environment names none of {unused:?}"
    );
    env.extend(
        overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    import_processor::ProcessorConfig::from_env(&queue_worker::Env::from_pairs(env))
        .expect("a valid test configuration")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "which the test does not supply")]
    fn a_resource_the_environment_names_but_the_test_does_not_supply_is_named() {
        processor_config(&[], &[]);
    }

    #[test]
    #[should_panic(expected = "NoSuchResource")]
    fn a_supplied_resource_the_environment_does_not_name_is_refused() {
        let template = template::load();
        let mut resources: Vec<(&str, &str)> = template["Resources"]
            .as_mapping()
            .into_iter()
            .flatten()
            .filter_map(|(id, _)| Some((id.as_str()?, "stand-in")))
            .collect();
        resources.push(("NoSuchResource", "stand-in"));
        processor_config(&resources, &[]);
    }
}
