//! A small parser of the Prometheus text format, for assertions on rendered output.

use std::collections::BTreeMap;

/// One sample line: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// The sample name (with `_bucket`, `_count`, `_sum` suffixes as rendered).
    pub name: String,
    /// The labels, sorted by name.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// Parsed exposition text.
#[derive(Clone, Debug, Default)]
pub struct Exposition {
    /// Every sample line.
    pub lines: Vec<Line>,
    /// `# TYPE` by metric family name.
    pub types: BTreeMap<String, String>,
    /// `# HELP` by metric family name.
    pub help: BTreeMap<String, String>,
}

impl Exposition {
    /// Parses `text`.
    ///
    /// # Panics
    /// On a line that is not valid exposition format (the test should fail loudly).
    pub fn parse(text: &str) -> Self {
        let mut out = Exposition::default();
        for raw in text.lines() {
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line has a kind");
                out.types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                out.help.insert(name.to_owned(), help.to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            out.lines.push(parse_line(line));
        }
        out
    }

    /// The value of the sample `name` whose labels are exactly `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.lines
            .iter()
            .find(|l| l.name == name && l.labels == wanted)
            .map(|l| l.value)
    }

    /// Like [`Exposition::get`], 0 when absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// Every sample of `name` whose labels include `labels`.
    pub fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Line> {
        self.lines
            .iter()
            .filter(|l| {
                l.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.labels.get(*k).is_some_and(|x| x == v))
            })
            .collect()
    }

    /// Sum of every sample of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).iter().map(|l| l.value).sum()
    }
}

fn parse_line(line: &str) -> Line {
    let (head, value) = line.rsplit_once(' ').expect("sample line has a value");
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad sample value in {line:?}")),
    };
    let (name, labels) = match head.split_once('{') {
        None => (head.to_owned(), BTreeMap::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}').expect("labels end with }");
            (name.to_owned(), parse_labels(body))
        }
    };
    Line {
        name,
        labels,
        value,
    }
}

fn parse_labels(body: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "label value starts with a quote");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.trim().to_owned(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_histograms_and_labels() {
        let text = "# HELP s_q Duration.\n# TYPE s_q histogram\n\
                    s_q_bucket{operation=\"select\",le=\"0.001\"} 2\n\
                    s_q_count{operation=\"select\"} 3\n\
                    s_g{pool=\"a\\\"b\"} 1.5\n";
        let e = Exposition::parse(text);
        assert_eq!(e.types["s_q"], "histogram");
        assert_eq!(e.help["s_q"], "Duration.");
        assert_eq!(
            e.get("s_q_bucket", &[("operation", "select"), ("le", "0.001")]),
            Some(2.0)
        );
        assert_eq!(e.get("s_q_count", &[("operation", "select")]), Some(3.0));
        assert_eq!(e.get("s_g", &[("pool", "a\"b")]), Some(1.5));
        assert_eq!(e.get("s_q_count", &[]), None);
    }
}
