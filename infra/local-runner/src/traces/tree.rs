//! One job's tree: the spans that carry its id, from where its work began, following parents
//! and links.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde_json::{Map, Value};

use super::{Span, SpanRef};

/// Attributes every span of a kind carries, or that its name already says: left out of the tree.
const PLUMBING: [&str; 18] = [
    "trace_id",
    "span_id",
    "message_id",
    "messaging.message.id",
    "messaging.system",
    "messaging.operation",
    "messaging.operation.type",
    "messaging.destination.name",
    "http.request.method",
    "http.route",
    "busy_ns",
    "idle_ns",
    "thread.id",
    "thread.name",
    "target",
    "level",
    "otel.name",
    "otel.kind",
];

/// The most events shown under one span; the rest are counted.
const MOST_EVENTS: usize = 8;

/// The longest attribute value shown; a longer one (an error's cause chain) is cut.
const LONGEST_VALUE: usize = 160;

/// The spans of one job, laid out as trees: each root is where a part of the job's work began
/// (the request that created it; a record whose sender's span was not collected), and under each
/// span come, by start time, the spans whose parent it is and the spans that link to it. Every
/// span appears once.
#[derive(Debug, Clone, PartialEq)]
pub struct JobTree {
    id: String,
    roots: Vec<Node>,
    traces: usize,
}

/// A span in the tree, with how it got there.
#[derive(Debug, Clone, PartialEq)]
struct Node {
    span: Span,
    /// It is here because it links to the span above (a record under its job's sender).
    linked: bool,
    /// A root whose parent or linked span was not collected: which.
    missing: Option<String>,
    children: Vec<Node>,
}

impl JobTree {
    /// The tree of the spans that carry `id` as the value of an attribute, and of every span
    /// reachable from where they began; `None` when no span carries it.
    pub fn of(spans: &[Span], id: &str) -> Option<Self> {
        let graph = Graph::new(spans);
        let seeds: Vec<usize> = (0..spans.len())
            .filter(|&i| spans[i].attributes.values().any(|v| v.as_str() == Some(id)))
            .collect();
        if seeds.is_empty() {
            return None;
        }
        let mut roots: Vec<usize> = seeds.iter().map(|&seed| graph.origin(seed)).collect();
        roots.sort_by_key(|&i| (spans[i].start_unix_nano, i));
        roots.dedup();
        let mut placed = HashSet::new();
        let roots: Vec<Node> = roots
            .into_iter()
            .filter_map(|root| {
                let mut node = graph.node(root, false, &mut placed)?;
                node.missing = graph.missing(root);
                Some(node)
            })
            .collect();
        let traces = placed
            .iter()
            .map(|&i| spans[i].trace_id.as_str())
            .collect::<HashSet<_>>()
            .len();
        Some(Self {
            id: id.to_owned(),
            roots,
            traces,
        })
    }

    /// The spans in the order they are printed.
    pub fn spans(&self) -> Vec<&Span> {
        fn walk<'a>(node: &'a Node, out: &mut Vec<&'a Span>) {
            out.push(&node.span);
            node.children.iter().for_each(|child| walk(child, out));
        }
        let mut out = Vec::new();
        self.roots.iter().for_each(|root| walk(root, &mut out));
        out
    }
}

impl fmt::Display for JobTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let spans = self.spans();
        writeln!(
            f,
            "{}: {} spans in {} traces (offsets from the first span's start; ↳ linked: a span that links to the one above)",
            self.id,
            spans.len(),
            self.traces
        )?;
        let origin = spans
            .iter()
            .map(|span| span.start_unix_nano)
            .min()
            .unwrap_or_default();
        for root in &self.roots {
            write_node(f, root, 0, origin)?;
        }
        Ok(())
    }
}

fn write_node(f: &mut fmt::Formatter<'_>, node: &Node, depth: usize, origin: u64) -> fmt::Result {
    let span = &node.span;
    let indent = "  ".repeat(depth);
    let mark = if node.linked { "↳ linked: " } else { "" };
    write!(
        f,
        "{}  {indent}{mark}{}  {}",
        offset(span.start_unix_nano, origin),
        span.name,
        milliseconds(span.duration_ms())
    )?;
    if let Some(service) = &span.service {
        write!(f, "  @{service}")?;
    }
    write_attributes(f, &span.attributes)?;
    if let Some(error) = &span.error {
        write!(f, "  ERROR {}", cut(error))?;
    }
    if let Some(missing) = &node.missing {
        write!(f, "  ({missing})")?;
    }
    writeln!(f)?;
    for event in span.events.iter().take(MOST_EVENTS) {
        let level = event.attributes.get("level").and_then(Value::as_str);
        let level = match level {
            Some(level) if !level.eq_ignore_ascii_case("info") => format!("{level} "),
            _ => String::new(),
        };
        write!(
            f,
            "{}  {indent}  · {level}{}",
            offset(event.time_unix_nano, origin),
            event.name
        )?;
        write_attributes(f, &event.attributes)?;
        writeln!(f)?;
    }
    if span.events.len() > MOST_EVENTS {
        writeln!(
            f,
            "{:>11}  {indent}  · and {} more events",
            "",
            span.events.len() - MOST_EVENTS
        )?;
    }
    for child in &node.children {
        write_node(f, child, depth + 1, origin)?;
    }
    Ok(())
}

/// Writes `attributes` sorted by key: the same line whether or not serde_json keeps the order
/// of insertion (its `preserve_order` feature, which another crate of a build may turn on).
fn write_attributes(f: &mut fmt::Formatter<'_>, attributes: &Map<String, Value>) -> fmt::Result {
    let mut sorted: Vec<(&String, &Value)> = attributes.iter().collect();
    sorted.sort_by_key(|(key, _)| *key);
    for (key, value) in sorted {
        if PLUMBING.contains(&key.as_str()) || key.starts_with("code.") {
            continue;
        }
        match value {
            Value::String(text) => write!(f, "  {key}={}", cut(text))?,
            other => write!(f, "  {key}={other}")?,
        }
    }
    Ok(())
}

fn offset(at: u64, origin: u64) -> String {
    format!("{:>+8} ms", at.saturating_sub(origin) / 1_000_000)
}

fn milliseconds(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

fn cut(text: &str) -> String {
    match text.char_indices().nth(LONGEST_VALUE) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// The spans with their edges: parent and links, both ways, among the spans collected.
struct Graph<'a> {
    spans: &'a [Span],
    /// Parent first, then the linked spans, each as an index, when collected.
    up: Vec<(Option<usize>, Vec<usize>)>,
    /// The spans whose parent it is (`false`) or that link to it (`true`), by start time.
    down: Vec<Vec<(usize, bool)>>,
}

impl<'a> Graph<'a> {
    fn new(spans: &'a [Span]) -> Self {
        let mut index = HashMap::new();
        for (i, span) in spans.iter().enumerate() {
            // A span exported twice is kept once.
            index.entry(span.reference()).or_insert(i);
        }
        let up: Vec<(Option<usize>, Vec<usize>)> = spans
            .iter()
            .map(|span| {
                let parent = span.parent_span_id.as_ref().and_then(|parent| {
                    index
                        .get(&SpanRef {
                            trace_id: span.trace_id.clone(),
                            span_id: parent.clone(),
                        })
                        .copied()
                });
                let links = span
                    .links
                    .iter()
                    .filter_map(|link| index.get(link).copied())
                    .collect();
                (parent, links)
            })
            .collect();
        let mut down = vec![Vec::new(); spans.len()];
        for (i, (parent, links)) in up.iter().enumerate() {
            if index.get(&spans[i].reference()) != Some(&i) {
                continue;
            }
            if let Some(parent) = parent {
                down[*parent].push((i, false));
            }
            for &linked in links {
                down[linked].push((i, true));
            }
        }
        for children in &mut down {
            children.sort_by_key(|&(i, _)| (spans[i].start_unix_nano, i));
        }
        Self { spans, up, down }
    }

    /// Where the work of span `i` began: up its link (a record's sender), or for a span without
    /// links its parent, until a span whose sender or parent was not collected. A span with
    /// links, or a consumer's span, never climbs to its parent: a record's parent is its
    /// invocation's span, which holds the records of other jobs too.
    fn origin(&self, mut i: usize) -> usize {
        let mut seen = HashSet::from([i]);
        loop {
            let (parent, links) = &self.up[i];
            let span = &self.spans[i];
            let next = if !span.links.is_empty() {
                links.first().copied()
            } else if span.kind == "consumer" {
                None
            } else {
                *parent
            };
            let Some(next) = next else {
                return i;
            };
            if !seen.insert(next) {
                return i;
            }
            i = next;
        }
    }

    /// Span `i` and what is below it, unless it is placed already.
    fn node(&self, i: usize, linked: bool, placed: &mut HashSet<usize>) -> Option<Node> {
        if !placed.insert(i) {
            return None;
        }
        let children = self.down[i]
            .iter()
            .filter_map(|&(child, linked)| self.node(child, linked, placed))
            .collect();
        Some(Node {
            span: self.spans[i].clone(),
            linked,
            missing: None,
            children,
        })
    }

    /// What span `i` names above it that was not collected.
    fn missing(&self, i: usize) -> Option<String> {
        let span = &self.spans[i];
        if let Some(link) = span.links.first() {
            return Some(format!(
                "links to span {} of trace {}, not collected",
                link.span_id, link.trace_id
            ));
        }
        if span.kind == "consumer" {
            return None;
        }
        span.parent_span_id
            .as_ref()
            .map(|parent| format!("parent span {parent} not collected"))
    }
}
