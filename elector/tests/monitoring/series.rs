//! Series as Prometheus stores them: the samples of an exposition, and a
//! timeline of scrapes written as a promtool test's `input_series`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use testkit::elector::ElectorProcess;

/// The `job` label the scrapes are stored under (the rules' `up` matcher
/// is `job=~".*elector.*"`).
pub const JOB: &str = "elector";

/// One sample of an exposition: metric name, labels, value.
pub type Sample = (String, BTreeMap<String, String>, f64);

/// The samples of an OpenMetrics (or Prometheus) text exposition.
pub fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => (name.to_owned(), labels(rest.strip_suffix('}').unwrap())),
        };
        out.push((name, labels, value));
    }
    out
}

/// `a="x",b="y"` (values with `\"`, `\\` and `\n` escaped) as a map.
pub fn labels(mut text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    while !text.is_empty() {
        let (name, rest) = text.split_once("=\"").unwrap_or_else(|| panic!("bad labels {text:?}"));
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("bad escape in {text:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated value in {text:?}"),
            }
        };
        map.insert(name.trim_start_matches(',').to_owned(), value);
        text = rest[end + 1..].trim_start_matches(',');
    }
    map
}

/// A series as PromQL writes it: `name{a="x",b="y"}`.
pub fn selector(name: &str, labels: &BTreeMap<String, String>) -> String {
    let labels: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
        .collect();
    format!("{name}{{{}}}", labels.join(","))
}

/// The value of the one series named `name` with (at least) `labels` in
/// the exposition `text`.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(text)
        .into_iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, _, v)| v)
}

pub async fn scrape(elector: &ElectorProcess) -> String {
    testkit::proc::get(&format!("{}/metrics", elector.url())).await
}

/// Every scrape of every elector, one step each, as Prometheus stores them.
#[derive(Default)]
pub struct Timeline {
    pub steps: Vec<BTreeMap<String, f64>>,
    /// Every metric name any scrape showed.
    pub names: BTreeSet<String>,
}

impl Timeline {
    /// One step: scrapes each elector (`None`: one that is down) under its
    /// `instance` label. Returns the step's number (its minute).
    pub async fn scrape(&mut self, electors: &[(&str, Option<&ElectorProcess>)]) -> usize {
        let mut step = BTreeMap::new();
        for (instance, elector) in electors {
            let target = BTreeMap::from([("instance".to_owned(), (*instance).to_owned()), ("job".into(), JOB.into())]);
            step.insert(selector("up", &target), if elector.is_some() { 1.0 } else { 0.0 });
            let Some(elector) = elector else { continue };
            for (name, mut labels, v) in samples(&scrape(elector).await) {
                labels.extend(target.clone());
                self.names.insert(name.clone());
                step.insert(selector(&name, &labels), v);
            }
        }
        self.steps.push(step);
        self.steps.len() - 1
    }

    /// The `input_series` of a promtool test: each series' values by step,
    /// `stale` where it left the scrapes, `_` where it was not scraped.
    pub fn input_series(&self) -> String {
        let all: BTreeSet<&String> = self.steps.iter().flat_map(|s| s.keys()).collect();
        let mut out = String::new();
        for series in all {
            let mut values = Vec::new();
            let mut before = false;
            for step in &self.steps {
                let now = step.get(series);
                values.push(match (now, before) {
                    (Some(v), _) => v.to_string(),
                    (None, true) => "stale".into(),
                    (None, false) => "_".into(),
                });
                before = now.is_some();
            }
            let _ = writeln!(out, "      - series: '{series}'\n        values: '{}'", values.join(" "));
        }
        out
    }
}
