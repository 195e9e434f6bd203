//! Comparing two configurations key by key (a resumed run against the one it started with), on their parsed
//! values rather than their text, so formatting and key order do not count and every difference is named.

use std::fmt;

use super::Config;

/// One key whose value differs between two configurations.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// Dotted key path (`optim.lr`, `optim.groups[1].lr`).
    pub key: String,
    /// The value in the saved configuration, as TOML; `None` when the key is absent there.
    pub saved: Option<String>,
    /// The value now; `None` when absent.
    pub now: Option<String>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(absent)".into());
        write!(
            f,
            "{}: {} (saved) vs {} (now)",
            self.key,
            show(&self.saved),
            show(&self.now)
        )
    }
}

impl Config {
    /// The keys whose values differ between `self` (the saved configuration) and `now`, in key order.
    pub fn differences(&self, now: &Config) -> Vec<Difference> {
        let value = |c: &Config| toml::Value::try_from(c).expect("configurations serialise");
        let mut out = Vec::new();
        diff("", Some(&value(self)), Some(&value(now)), &mut out);
        out
    }
}

fn diff(key: &str, a: Option<&toml::Value>, b: Option<&toml::Value>, out: &mut Vec<Difference>) {
    use toml::Value;
    let join = |k: &str| {
        if key.is_empty() {
            k.to_string()
        } else {
            format!("{key}.{k}")
        }
    };
    match (a, b) {
        (Some(Value::Table(x)), Some(Value::Table(y))) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                diff(&join(k), x.get(k), y.get(k), out);
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y)))
            if x.len() == y.len() && x.iter().chain(y).all(Value::is_table) =>
        {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff(&format!("{key}[{i}]"), Some(p), Some(q), out);
            }
        }
        (a, b) if a != b => out.push(Difference {
            key: key.to_string(),
            saved: a.map(show),
            now: b.map(show),
        }),
        _ => {}
    }
}

/// A value as it would appear in a TOML file (tables inline).
fn show(v: &toml::Value) -> String {
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_changed_key_is_named_with_both_values() {
        let saved = Config::parse("[optim]\nlr = 0.01\n", "a.toml", &[]).unwrap();
        let now = Config::parse(
            "[train]\nepochs = 3\n[optim]\nlr = 0.02\n",
            "b.toml",
            &["model.base_width=8".into()],
        )
        .unwrap();
        let shown: Vec<String> = saved
            .differences(&now)
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(
            shown,
            [
                "model.base_width: (absent) (saved) vs 8 (now)",
                "optim.lr: 0.01 (saved) vs 0.02 (now)",
                "train.epochs: 10 (saved) vs 3 (now)",
            ]
        );
        assert!(saved.differences(&saved.clone()).is_empty());
    }

    #[test]
    fn groups_are_compared_entry_by_entry() {
        let groups = |lr: f64| {
            format!(
                "[[optim.groups]]\nname = \"a\"\nparams = [\"heads\"]\n[[optim.groups]]\nname = \"b\"\n\
                 params = [\"layer4\"]\nlr = {lr}\n"
            )
        };
        let a = Config::parse(&groups(0.1), "a.toml", &[]).unwrap();
        let b = Config::parse(&groups(0.2), "b.toml", &[]).unwrap();
        let d = a.differences(&b);
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0].to_string(),
            "optim.groups[1].lr: 0.1 (saved) vs 0.2 (now)"
        );
    }
}
