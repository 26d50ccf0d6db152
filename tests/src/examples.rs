//! The examples marked in `template.yaml`: every line that belongs only to example NAME sits
//! between a `# example: NAME` line and the next `# end example: NAME` line, and
//! `infra/remove-example.sh NAME` deletes those lines (with the example's crates). This module
//! reads the markers as that script does, so tests can check that the markers are balanced and
//! that the template left after removing any example is still whole ([`violations`]), and run
//! the template's invariants on every such template ([`variants`]).

use std::collections::BTreeSet;

use local_runner::template::{get_att, intrinsic, reference};
use serde_yaml_ng::Value;

/// The text of `template.yaml` at the workspace root.
pub fn load_text() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml");
    std::fs::read_to_string(path).expect("template.yaml exists")
}

/// A marker line: the start or the end of a block of the named example.
#[derive(Debug, PartialEq, Eq)]
enum Marker<'a> {
    Start(&'a str),
    End(&'a str),
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// The marker on `line`, none, or an error for a line that looks like one but is not exactly
/// `# example: NAME` or `# end example: NAME` (indentation allowed, nothing after the name).
fn marker(line: &str) -> Result<Option<Marker<'_>>, String> {
    let text = line.trim_start_matches([' ', '\t']);
    if let Some(name) = text.strip_prefix("# example: ").filter(|n| is_name(n)) {
        return Ok(Some(Marker::Start(name)));
    }
    if let Some(name) = text.strip_prefix("# end example: ").filter(|n| is_name(n)) {
        return Ok(Some(Marker::End(name)));
    }
    // What the script also refuses: `#`, blanks, `end` (blanks), `example`, blanks, `:`.
    let looks_like = text.strip_prefix('#').is_some_and(|rest| {
        let rest = rest.trim_start_matches([' ', '\t']);
        let rest = rest
            .strip_prefix("end")
            .map_or(rest, |r| r.trim_start_matches([' ', '\t']));
        rest.strip_prefix("example")
            .is_some_and(|r| r.trim_start_matches([' ', '\t']).starts_with(':'))
    });
    if looks_like {
        return Err(format!(
            "a misspelled example marker {text:?} (exactly \"# example: NAME\" or \"# end example: NAME\")"
        ));
    }
    Ok(None)
}

/// A block of lines of one example: the 0-based line numbers of its two markers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub example: String,
    pub start: usize,
    pub end: usize,
}

/// Every marked block of `text`, in order, or every reason the markers are not balanced (an end
/// without its start, a start inside an open block, a block never closed, a misspelled marker).
/// Blocks do not nest, as `infra/remove-example.sh` requires.
pub fn blocks(text: &str) -> Result<Vec<Block>, Vec<String>> {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    let mut open: Option<(&str, usize)> = None;
    for (number, line) in text.lines().enumerate() {
        let at = number + 1;
        match marker(line) {
            Err(problem) => problems.push(format!("line {at}: {problem}")),
            Ok(None) => {}
            Ok(Some(Marker::Start(name))) => {
                if let Some((other, since)) = open {
                    problems.push(format!(
                        "line {at}: \"# example: {name}\" inside the open block of example {other} (line {})",
                        since + 1
                    ));
                }
                open = Some((name, number));
            }
            Ok(Some(Marker::End(name))) => match open.take() {
                Some((started, start)) if started == name => found.push(Block {
                    example: name.to_owned(),
                    start,
                    end: number,
                }),
                other => problems.push(format!(
                    "line {at}: \"# end example: {name}\" without its \"# example: {name}\"{}",
                    other.map_or(String::new(), |(o, s)| format!(
                        " (example {o} is open since line {})",
                        s + 1
                    ))
                )),
            },
        }
    }
    if let Some((name, since)) = open {
        problems.push(format!(
            "example {name}, opened on line {}, is never closed",
            since + 1
        ));
    }
    if problems.is_empty() {
        Ok(found)
    } else {
        Err(problems)
    }
}

/// The examples marked in `text`, each once.
pub fn examples(text: &str) -> Result<BTreeSet<String>, Vec<String>> {
    Ok(blocks(text)?.into_iter().map(|b| b.example).collect())
}

/// `text` without the blocks of `example` (their marker lines included), as
/// `infra/remove-example.sh` leaves it.
pub fn without(text: &str, example: &str) -> Result<String, Vec<String>> {
    let blocks = blocks(text)?;
    let removed = |number: usize| {
        blocks
            .iter()
            .any(|b| b.example == example && (b.start..=b.end).contains(&number))
    };
    let mut kept = String::with_capacity(text.len());
    for (number, line) in text.lines().enumerate() {
        if !removed(number) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    Ok(kept)
}

/// `template.yaml` as it is, then without each example it marks: the templates a fork can have,
/// each with a label for messages.
pub fn variants() -> Vec<(String, Value)> {
    let text = load_text();
    let parse = |label: &str, text: &str| {
        serde_yaml_ng::from_str::<Value>(text)
            .unwrap_or_else(|e| panic!("{label} is not valid YAML: {e}"))
    };
    let mut all = vec![("template.yaml".to_owned(), parse("template.yaml", &text))];
    for example in examples(&text).unwrap_or_else(|p| panic!("template.yaml: {p:?}")) {
        let label = format!("template.yaml without example {example}");
        let stripped = without(&text, &example).unwrap_or_else(|p| panic!("{label}: {p:?}"));
        all.push((label.clone(), parse(&label, &stripped)));
    }
    all
}

/// The sections of a template whose entries have names that intrinsic functions refer to.
const NAMED_SECTIONS: [&str; 4] = ["Parameters", "Resources", "Conditions", "Mappings"];

/// The names `template` defines, as `Section/Name`.
fn defined(template: &Value) -> BTreeSet<String> {
    NAMED_SECTIONS
        .iter()
        .flat_map(|section| {
            template[*section]
                .as_mapping()
                .into_iter()
                .flat_map(|m| m.keys())
                .filter_map(Value::as_str)
                .map(move |name| format!("{section}/{name}"))
        })
        .collect()
}

/// The variables of a `!Sub` string: `${Name}` and `${Name.Attribute}` give `Name`; `${!Literal}`
/// is text.
fn sub_variables(text: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        rest = &rest[at + 2..];
        let Some(close) = rest.find('}') else { break };
        let variable = &rest[..close];
        if !variable.starts_with('!') {
            names.push(variable.split('.').next().unwrap_or(variable));
        }
        rest = &rest[close + 1..];
    }
    names
}

/// Every name `value` refers to, as `Section/Name` (a `Ref` or a `!Sub` variable may name a
/// parameter or a resource: both are given), with the path where it does.
fn references(value: &Value, path: &str, found: &mut Vec<(String, String)>) {
    let either = |name: &str, found: &mut Vec<(String, String)>| {
        if !name.starts_with("AWS::") {
            for section in ["Parameters", "Resources"] {
                found.push((format!("{section}/{name}"), path.to_owned()));
            }
        }
    };
    if let Some(name) = reference(value) {
        either(name, found);
    }
    if let Some((resource, _)) = get_att(value) {
        found.push((format!("Resources/{resource}"), path.to_owned()));
    }
    if let Some(sub) = intrinsic(value, "Sub") {
        let (text, own) = match sub {
            Value::Sequence(parts) => (parts.first(), parts.get(1)),
            other => (Some(other), None),
        };
        for name in sub_variables(text.and_then(Value::as_str).unwrap_or_default()) {
            let local = own.is_some_and(|vars| !vars[name].is_null());
            if !local {
                either(name, found);
            }
        }
    }
    if let Some(condition) = intrinsic(value, "If")
        .and_then(Value::as_sequence)
        .and_then(|args| args.first())
        .and_then(Value::as_str)
    {
        found.push((format!("Conditions/{condition}"), path.to_owned()));
    }
    if let Some(condition) = intrinsic(value, "Condition").and_then(Value::as_str) {
        found.push((format!("Conditions/{condition}"), path.to_owned()));
    }
    if let Some(map) = intrinsic(value, "FindInMap")
        .and_then(Value::as_sequence)
        .and_then(|args| args.first())
        .and_then(Value::as_str)
    {
        found.push((format!("Mappings/{map}"), path.to_owned()));
    }
    match value {
        Value::Mapping(entries) => {
            for (key, entry) in entries {
                let key = key.as_str().unwrap_or("?");
                let inner = format!("{path}/{key}");
                // A resource's or an output's `Condition: Name`, a resource's `DependsOn`.
                if let (true, Some(condition)) = (key == "Condition", entry.as_str()) {
                    found.push((format!("Conditions/{condition}"), inner.clone()));
                }
                if key == "DependsOn" {
                    for resource in entry
                        .as_sequence()
                        .map_or_else(|| vec![entry], |s| s.iter().collect())
                    {
                        if let Some(resource) = resource.as_str() {
                            found.push((format!("Resources/{resource}"), inner.clone()));
                        }
                    }
                }
                references(entry, &inner, found);
            }
        }
        Value::Sequence(items) => {
            for (index, item) in items.iter().enumerate() {
                references(item, &format!("{path}/{index}"), found);
            }
        }
        Value::Tagged(tagged) => references(&tagged.value, path, found),
        _ => {}
    }
}

/// Every way the examples' markers in `text` break: markers not balanced, or a template left
/// without an example that does not parse, has an emptied section, or still refers (`!Ref`,
/// `!GetAtt`, `!Sub`, `!If`, `!FindInMap`, `Condition`, `DependsOn`) to a parameter,
/// resource, condition or mapping that the example's blocks removed.
pub fn violations(text: &str) -> Vec<String> {
    let examples = match examples(text) {
        Ok(examples) => examples,
        Err(problems) => return problems,
    };
    let full: Value = match serde_yaml_ng::from_str(text) {
        Ok(full) => full,
        Err(e) => return vec![format!("the template is not valid YAML: {e}")],
    };
    let mut found = Vec::new();
    for example in examples {
        let Ok(stripped) = without(text, &example) else {
            continue;
        };
        let after: Value = match serde_yaml_ng::from_str(&stripped) {
            Ok(after) => after,
            Err(e) => {
                found.push(format!("without example {example}: not valid YAML: {e}"));
                continue;
            }
        };
        for (section, content) in full.as_mapping().into_iter().flatten() {
            let section = section.as_str().unwrap_or("?");
            // The section's line kept, its entries all removed: `Section:` with nothing under it.
            let emptied = content.as_mapping().is_some_and(|m| !m.is_empty())
                && after
                    .get(section)
                    .is_some_and(|left| left.as_mapping().is_none_or(|m| m.is_empty()));
            if emptied {
                found.push(format!(
                    "without example {example}: {section} is left empty (mark the section's own line too)"
                ));
            }
        }
        let removed: BTreeSet<String> = defined(&full)
            .difference(&defined(&after))
            .cloned()
            .collect();
        if removed.is_empty() {
            found.push(format!(
                "without example {example}: no parameter, resource, condition or mapping is removed"
            ));
        }
        let mut refs = Vec::new();
        references(&after, "", &mut refs);
        let mut dangling: Vec<String> = refs
            .into_iter()
            .filter(|(name, _)| removed.contains(name))
            .map(|(name, path)| {
                format!(
                    "without example {example}: {path} refers to {name}, which its blocks remove"
                )
            })
            .collect();
        dangling.dedup();
        found.extend(dangling);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small template with one example, `demo`, in every kind of place.
    const DEMO: &str = "\
Parameters:
  Shared:
    Type: String
  # example: demo
  DemoSize:
    Type: Number
  # end example: demo
Conditions:
  HasShared: !Not [!Equals [!Ref Shared, '']]
  # example: demo
  DemoBig: !Equals [!Ref DemoSize, 10]
  # end example: demo
Resources:
  SharedTable:
    Type: AWS::DynamoDB::Table
  # example: demo
  DemoQueue:
    Type: AWS::SQS::Queue
    Properties:
      DelaySeconds: !If [DemoBig, 1, 0]
  # end example: demo
  Worker:
    Type: AWS::Serverless::Function
    Properties:
      Environment:
        Variables:
          TABLE: !Ref SharedTable
Outputs:
  Table:
    Value: !Ref SharedTable
  # example: demo
  Queue:
    Value: !GetAtt DemoQueue.Arn
  # end example: demo
";

    #[test]
    fn the_templates_markers_are_balanced_and_removing_each_example_leaves_a_whole_template() {
        let text = load_text();
        assert!(blocks(&text).is_ok(), "{:?}", blocks(&text));
        assert_eq!(violations(&text), Vec::<String>::new());
        // Each example left out parses and still has a function.
        for (label, template) in variants() {
            let functions = template["Resources"]
                .as_mapping()
                .into_iter()
                .flatten()
                .filter(|(_, r)| r["Type"].as_str() == Some("AWS::Serverless::Function"))
                .count();
            assert!(functions > 0, "{label} has no function");
        }
    }

    #[test]
    fn removing_an_example_drops_its_blocks_and_nothing_else() {
        assert_eq!(violations(DEMO), Vec::<String>::new());
        let left = without(DEMO, "demo").unwrap();
        assert!(
            !left.contains("Demo") && !left.contains("example"),
            "{left}"
        );
        for kept in ["Shared:", "HasShared", "SharedTable:", "Worker:", "Table:"] {
            assert!(left.contains(kept), "{kept} missing from {left}");
        }
        assert_eq!(without(DEMO, "other").unwrap(), DEMO);
        assert_eq!(examples(DEMO).unwrap(), BTreeSet::from(["demo".to_owned()]));
    }

    #[test]
    fn unbalanced_nested_or_misspelled_markers_are_caught() {
        let cases = [
            (
                DEMO.replacen("  # end example: demo\n", "", 1),
                "inside the open block of example demo",
            ),
            (
                DEMO.replacen("  # example: demo\n", "", 1),
                "\"# end example: demo\" without its \"# example: demo\"",
            ),
            (format!("{DEMO}# example: demo\n"), "is never closed"),
            (
                DEMO.replacen(
                    "  # example: demo\n",
                    "  # example: demo\n  # example: x\n",
                    1,
                ),
                "\"# example: x\" inside the open block of example demo",
            ),
            (
                DEMO.replacen("# end example: demo", "# end example: other", 1),
                "without its \"# example: other\" (example demo is open",
            ),
            (
                DEMO.replacen("# example: demo", "#example: demo", 1),
                "misspelled example marker",
            ),
            (
                DEMO.replacen("# end example: demo", "# end example: demo ", 1),
                "misspelled example marker",
            ),
            (DEMO.replacen("# example: demo", "# Example: demo", 1), ""),
        ];
        for (text, expected) in cases {
            let problems = blocks(&text).err().unwrap_or_default();
            if expected.is_empty() {
                // Not a marker (capitalised): an ordinary comment, and then the real end
                // marker has no start.
                assert!(
                    problems.iter().any(|p| p.contains("without its")),
                    "{problems:?}"
                );
                continue;
            }
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "expected {expected:?} in {problems:?} for:\n{text}"
            );
            assert!(
                violations(&text).iter().any(|p| p.contains(expected)),
                "violations() reports it too"
            );
        }
    }

    #[test]
    fn a_reference_left_to_something_an_example_removes_is_caught() {
        // A shared resource naming the example's queue, parameter, condition: each caught.
        let text = DEMO.replace(
            "          TABLE: !Ref SharedTable\n",
            "          TABLE: !Ref SharedTable\n          QUEUE: !Ref DemoQueue\n          \
             ARN: !GetAtt [DemoQueue, Arn]\n          URL: !Sub 'https://${DemoQueue.QueueName}/${!Literal}'\n          \
             SIZE: !Sub ['${Size}', {Size: !Ref DemoSize}]\n          \
             BIG: !If [DemoBig, yes, no]\n",
        );
        let found = violations(&text);
        for expected in [
            "/Resources/Worker/Properties/Environment/Variables/QUEUE refers to Resources/DemoQueue",
            "/ARN refers to Resources/DemoQueue",
            "/URL refers to Resources/DemoQueue",
            "/SIZE/1/Size refers to Parameters/DemoSize",
            "/BIG refers to Conditions/DemoBig",
        ] {
            assert!(
                found.iter().any(|v| v.contains(expected)),
                "expected {expected:?} in {found:?}"
            );
        }
        // `${Size}` is the !Sub's own variable, `${!Literal}` text: neither is a reference.
        assert!(
            !found
                .iter()
                .any(|v| v.contains("to Parameters/Size") || v.contains("Literal")),
            "{found:?}"
        );
        // A resource that depends on the example's, or is created under its condition.
        let text = DEMO.replace(
            "  Worker:\n    Type: AWS::Serverless::Function\n",
            "  Worker:\n    Type: AWS::Serverless::Function\n    DependsOn: [DemoQueue]\n    Condition: DemoBig\n",
        );
        let found = violations(&text);
        assert!(
            found
                .iter()
                .any(|v| v.contains("/Resources/Worker/DependsOn refers to Resources/DemoQueue")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|v| v.contains("/Resources/Worker/Condition refers to Conditions/DemoBig")),
            "{found:?}"
        );
    }

    #[test]
    fn a_section_left_empty_or_an_example_that_removes_nothing_is_caught() {
        let text = DEMO.replace(
            "Conditions:\n  HasShared: !Not [!Equals [!Ref Shared, '']]\n",
            "Conditions:\n",
        );
        assert!(
            violations(&text)
                .iter()
                .any(|v| v.contains("Conditions is left empty")),
            "{:?}",
            violations(&text)
        );
        let text = format!("{DEMO}# example: empty\n# end example: empty\n");
        assert!(
            violations(&text)
                .iter()
                .any(|v| v.contains("without example empty: no parameter, resource")),
            "{:?}",
            violations(&text)
        );
    }
}
