//! The alert rules as a promtool test sees them: each rule's labels and
//! annotations, and the `alert_rule_test` entries of what should fire.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use serde_yaml::Value;

/// An alerting rule of `alerts.yaml`.
pub struct Rule {
    pub alert: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

pub fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_mapping()
        .map(|m| m.iter().map(|(k, v)| (k.as_str().unwrap().to_owned(), v.as_str().unwrap().to_owned())).collect())
        .unwrap_or_default()
}

/// Every rule of a rule file: (its `alert` or `record`, its `expr`) and,
/// for alerts, the [`Rule`].
pub fn rules(file: &Path) -> (Vec<(String, String)>, Vec<Rule>) {
    let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let mut exprs = Vec::new();
    let mut alerts = Vec::new();
    for group in doc["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().or_else(|| rule["record"].as_str()).unwrap().to_owned();
            exprs.push((name.clone(), rule["expr"].as_str().unwrap().to_owned()));
            if rule["alert"].is_string() {
                alerts.push(Rule {
                    alert: name,
                    labels: string_map(&rule["labels"]),
                    annotations: string_map(&rule["annotations"]),
                });
            }
        }
    }
    (exprs, alerts)
}

/// `template` with each `{{ $labels.NAME }}` replaced by the label's value
/// (the rules' annotations use nothing else; see alerts.yaml).
pub fn render(template: &str, labels: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let end = rest[start..].find("}}").unwrap() + start;
        let field = rest[start + 2..end].trim();
        let label = field.strip_prefix("$labels.").unwrap_or_else(|| panic!("annotation uses {field:?}: {template}"));
        out.push_str(&rest[..start]);
        out.push_str(labels.get(label).unwrap_or_else(|| panic!("no label {label} for {template}")));
        rest = &rest[end + 2..];
    }
    out + rest
}

/// What an alert should be doing at a step: firing with each of these
/// label sets (its own labels, such as `severity`, are added), or, empty,
/// not firing.
pub struct Expect {
    pub step: usize,
    pub alert: String,
    pub firing: Vec<Vec<(&'static str, &'static str)>>,
}

pub fn expect(step: usize, alert: &str, firing: &[&[(&'static str, &'static str)]]) -> Expect {
    Expect { step, alert: alert.to_owned(), firing: firing.iter().map(|l| l.to_vec()).collect() }
}

/// The `alert_rule_test` entries for `expects`, each firing alert with its
/// full labels and its annotations rendered.
pub fn alert_tests(rules: &[Rule], expects: &[Expect]) -> String {
    let mut out = String::new();
    for e in expects {
        let rule = rules.iter().find(|r| r.alert == e.alert).unwrap_or_else(|| panic!("no alert {}", e.alert));
        let _ = writeln!(out, "      - eval_time: {}m\n        alertname: {}", e.step, e.alert);
        if e.firing.is_empty() {
            out.push_str("        exp_alerts: []\n");
            continue;
        }
        out.push_str("        exp_alerts:\n");
        for firing in &e.firing {
            let mut labels: BTreeMap<String, String> =
                firing.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            labels.extend(rule.labels.clone());
            let annotations: BTreeMap<String, String> =
                rule.annotations.iter().map(|(k, v)| (k.clone(), render(v, &labels))).collect();
            let yaml = |map: &BTreeMap<String, String>| serde_json::to_string(map).unwrap();
            let _ = writeln!(
                out,
                "          - exp_labels: {}\n            exp_annotations: {}",
                yaml(&labels),
                yaml(&annotations)
            );
        }
    }
    out
}

/// Every `mpsync_…` metric (and `up`) named in `exprs`.
pub fn metric_names(exprs: &[String]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(i) = rest.find("mpsync_") {
            let name: String = rest[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            rest = &rest[i + name.len()..];
            names.insert(name);
        }
        if expr.contains("up{") {
            names.insert("up".into());
        }
    }
    names
}
