//! Reading `template.yaml`: intrinsic functions resolved the way a deploy with default
//! parameters would resolve them, so local resources get the template's settings.

use serde_yaml_ng::Value;

/// A parsed SAM template.
#[derive(Debug, Clone)]
pub struct Template {
    root: Value,
}

/// The template cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The file cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The path tried.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not YAML.
    #[error("template.yaml is not valid YAML")]
    Yaml(#[from] serde_yaml_ng::Error),
    /// Something the runner needs is missing or not understood.
    #[error("template.yaml: {0}")]
    Unsupported(String),
}

impl Template {
    /// Reads and parses the template at `path`.
    pub fn load(path: &str) -> Result<Self, TemplateError> {
        let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses template text.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        Ok(Self {
            root: serde_yaml_ng::from_str(text)?,
        })
    }

    /// The whole document.
    pub fn root(&self) -> &Value {
        &self.root
    }

    /// The resources of `kind` (e.g. `AWS::SQS::Queue`), by logical id, in template order.
    pub fn resources(&self, kind: &str) -> Vec<(&str, &Value)> {
        self.root["Resources"]
            .as_mapping()
            .into_iter()
            .flatten()
            .filter(|(_, resource)| resource["Type"].as_str() == Some(kind))
            .filter_map(|(id, resource)| Some((id.as_str()?, resource)))
            .collect()
    }

    /// A parameter's default value.
    pub fn parameter_default(&self, name: &str) -> Option<&Value> {
        let default = &self.root["Parameters"][name]["Default"];
        (!default.is_null()).then_some(default)
    }

    /// `value` as a deploy with the parameters' defaults sees it ([`resolve_defaults`]).
    pub fn resolved(&self, value: &Value) -> Value {
        resolve_defaults(&self.root, value)
    }

    /// A number: literal, `!Ref Parameter` (its default), or `!FindInMap` over such keys.
    pub fn number(&self, value: &Value) -> Option<f64> {
        if let Some(n) = literal_number(value) {
            return Some(n);
        }
        if let Some(name) = reference(value) {
            return self.parameter_default(name).and_then(literal_number);
        }
        let args = intrinsic(value, "FindInMap")?.as_sequence()?;
        let [map, key, attribute] = args.as_slice() else {
            return None;
        };
        let key = self.scalar_text(key)?;
        literal_number(&self.root["Mappings"][map.as_str()?][key.as_str()][attribute.as_str()?])
    }

    /// A literal scalar, or a parameter's default, as text.
    fn scalar_text(&self, value: &Value) -> Option<String> {
        match reference(value) {
            Some(name) => self.parameter_default(name).and_then(scalar_text),
            None => scalar_text(value),
        }
    }
}

/// `value` as a deploy with the parameters' defaults sees it: `!Ref Parameter` is its default,
/// `!If` takes the branch its condition picks, `AWS::NoValue` drops the entry. Other
/// intrinsics stay as they are.
pub fn resolve_defaults(template: &Value, value: &Value) -> Value {
    if let Some(name) = reference(value) {
        if name == "AWS::NoValue" {
            return Value::Null;
        }
        let default = &template["Parameters"][name]["Default"];
        if !template["Parameters"][name].is_null() {
            return default.clone();
        }
        return value.clone();
    }
    if let Some(args) = intrinsic(value, "If").and_then(Value::as_sequence) {
        if let [condition, yes, no] = args.as_slice() {
            let holds = condition_holds(template, condition.as_str().unwrap_or_default());
            return resolve_defaults(template, if holds { yes } else { no });
        }
    }
    match value {
        Value::Mapping(entries) => Value::Mapping(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), resolve_defaults(template, v)))
                .filter(|(_, v)| !v.is_null())
                .collect(),
        ),
        Value::Sequence(items) => Value::Sequence(
            items
                .iter()
                .map(|v| resolve_defaults(template, v))
                .filter(|v| !v.is_null())
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Whether condition `name` holds with the parameters' defaults (`Not`, `Equals`, `And`, `Or`,
/// `Condition`).
pub fn condition_holds(template: &Value, name: &str) -> bool {
    evaluate(template, &template["Conditions"][name])
}

fn evaluate(template: &Value, expression: &Value) -> bool {
    let args = |name| {
        intrinsic(expression, name)
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default()
    };
    if intrinsic(expression, "Not").is_some() {
        return !args("Not").first().is_some_and(|e| evaluate(template, e));
    }
    if intrinsic(expression, "And").is_some() {
        return args("And").iter().all(|e| evaluate(template, e));
    }
    if intrinsic(expression, "Or").is_some() {
        return args("Or").iter().any(|e| evaluate(template, e));
    }
    if let Some(name) = intrinsic(expression, "Condition").and_then(Value::as_str) {
        return condition_holds(template, name);
    }
    if let [a, b] = args("Equals").as_slice() {
        let text = |v: &Value| scalar_text(&resolve_defaults(template, v));
        return text(a) == text(b);
    }
    false
}

/// A scalar as text: strings as they are, numbers and booleans printed.
pub fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A literal number (numbers, and strings holding one).
pub fn literal_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The argument of an intrinsic function in short form (`!Name arg`) or long form
/// (`Fn::Name: arg`, `Ref: arg`).
pub fn intrinsic<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    match value {
        Value::Tagged(tagged) if tagged.tag == name => Some(&tagged.value),
        Value::Mapping(map) if map.len() == 1 => {
            let long = if name == "Ref" {
                name.to_owned()
            } else {
                format!("Fn::{name}")
            };
            map.get(long.as_str())
        }
        _ => None,
    }
}

/// The parameter or resource a `!Ref` names.
pub fn reference(value: &Value) -> Option<&str> {
    intrinsic(value, "Ref")?.as_str()
}

/// The resource of a `!GetAtt Resource.Attribute`, and the attribute.
pub fn get_att(value: &Value) -> Option<(&str, &str)> {
    match intrinsic(value, "GetAtt")? {
        Value::String(text) => text.split_once('.'),
        Value::Sequence(parts) => Some((parts.first()?.as_str()?, parts.get(1)?.as_str()?)),
        _ => None,
    }
}
