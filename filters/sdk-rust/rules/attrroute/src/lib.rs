//! attrroute, the stock turnout rule, written with the Rust SDK: it routes an event by matching
//! its context attributes or extensions against a list of filters, in the manner of the
//! CloudEvents Subscriptions API's exact, prefix and suffix filter dialects. Same behaviour and
//! configuration errors as the Go build (filters/rules/attrroute).
//!
//! Configuration (the route's rule config, JSON):
//!
//! ```text
//! {
//!   "match": "first",                     // "first" (default): the first matching filter wins;
//!                                         // "all": the union of every matching filter's outputs
//!   "filters": [
//!     {"attribute": "type", "prefix": "alarm.", "outputs": ["urgent"]},
//!     {"attribute": "region", "exact": "north", "outputs": ["north"]}
//!   ],
//!   "default": ["archive"]                // outputs when nothing matches; absent or [] = drop
//! }
//! ```
//!
//! Each filter names one attribute (a context attribute such as type, source or subject, or an
//! extension) and exactly one of exact, prefix or suffix. An absent attribute never matches.
//!
//! Invariant: the decision depends only on the event and the configuration; the rule never
//! fails an event once its configuration was accepted.

use turnout::{json, Decision, Event, Rule};

enum Kind {
    Exact,
    Prefix,
    Suffix,
}

struct Filter {
    attribute: String,
    kind: Kind,
    value: String,
    outputs: Vec<String>,
}

impl Filter {
    fn matches(&self, e: &Event) -> bool {
        match e.attribute(&self.attribute) {
            None => false,
            Some(v) => match self.kind {
                Kind::Exact => v == self.value,
                Kind::Prefix => v.starts_with(self.value.as_str()),
                Kind::Suffix => v.ends_with(self.value.as_str()),
            },
        }
    }
}

struct AttrRoute {
    match_all: bool,
    filters: Vec<Filter>,
    default: Vec<String>,
}

/// Records `key` as seen, refusing a key given twice (or an array where an object belongs).
fn once(seen: &mut Vec<Vec<u8>>, key: Option<&[u8]>) -> Result<String, String> {
    match key {
        Some(k) if !seen.iter().any(|s| s == k) => {
            seen.push(k.to_vec());
            Ok(String::from_utf8_lossy(k).into_owned())
        }
        _ => Err("want an object with each key once".into()),
    }
}

fn parse_filter(raw: &[u8]) -> Result<Filter, String> {
    let mut f = Filter { attribute: String::new(), kind: Kind::Exact, value: String::new(), outputs: Vec::new() };
    let mut kinds = 0;
    let mut seen = Vec::new();
    json::each(raw, |key, v| {
        let k = once(&mut seen, key)?;
        match k.as_str() {
            "attribute" | "exact" | "prefix" | "suffix" => {
                let s =
                    json::string(v).ok_or_else(|| format!("{k}: want a string, got {}", String::from_utf8_lossy(v)))?;
                match k.as_str() {
                    "attribute" => f.attribute = s,
                    "exact" => (kinds, f.kind, f.value) = (kinds + 1, Kind::Exact, s),
                    "prefix" => (kinds, f.kind, f.value) = (kinds + 1, Kind::Prefix, s),
                    _ => (kinds, f.kind, f.value) = (kinds + 1, Kind::Suffix, s),
                }
            }
            "outputs" => f.outputs = json::strings(v).map_err(|e| format!("outputs: {e}"))?,
            _ => return Err(format!("unknown key {k:?}")),
        }
        Ok(())
    })?;
    if f.attribute.is_empty() {
        return Err("attribute is required".into());
    }
    if kinds != 1 {
        return Err("exactly one of exact, prefix, suffix is required".into());
    }
    if f.outputs.is_empty() {
        return Err("outputs: at least one output is required".into());
    }
    Ok(f)
}

/// Reads the configuration strictly: unknown keys and wrong types are errors.
fn parse(raw: &[u8]) -> Result<AttrRoute, String> {
    let mut r = AttrRoute { match_all: false, filters: Vec::new(), default: Vec::new() };
    let mut seen = Vec::new();
    json::each(raw, |key, v| {
        let k = once(&mut seen, key)?;
        match k.as_str() {
            "match" => match json::string(v).as_deref() {
                Some("first") => r.match_all = false,
                Some("all") => r.match_all = true,
                _ => return Err(format!("match {}: want \"first\" or \"all\"", String::from_utf8_lossy(v))),
            },
            "filters" => {
                return json::each(v, |key, fv| {
                    if key.is_some() {
                        return Err("filters: want an array".into());
                    }
                    let f = parse_filter(fv).map_err(|e| format!("filters[{}]: {e}", r.filters.len()))?;
                    r.filters.push(f);
                    Ok(())
                })
            }
            "default" => r.default = json::strings(v).map_err(|e| format!("default: {e}"))?,
            _ => return Err(format!("unknown key {k:?}")),
        }
        Ok(())
    })?;
    if r.filters.is_empty() {
        return Err("filters: at least one filter is required".into());
    }
    Ok(r)
}

impl AttrRoute {
    fn fallback(&self) -> Decision<'_> {
        if self.default.is_empty() {
            return Decision::drop();
        }
        Decision::route(&self.default)
    }
}

impl Rule for AttrRoute {
    fn init(config: &[u8]) -> Result<Self, String> {
        parse(config).map_err(|e| format!("attrroute config: {e}"))
    }

    fn decide(&mut self, e: &mut Event<'_>) -> Decision<'_> {
        if !self.match_all {
            return match self.filters.iter().find(|f| f.matches(e)) {
                Some(f) => Decision::route(&f.outputs),
                None => self.fallback(),
            };
        }
        let mut union: Vec<&str> = Vec::new();
        for f in self.filters.iter().filter(|f| f.matches(e)) {
            for o in &f.outputs {
                if !union.contains(&o.as_str()) {
                    union.push(o);
                }
            }
        }
        if union.is_empty() {
            return self.fallback();
        }
        Decision::route(union)
    }
}

turnout::rule!(AttrRoute);

#[cfg(test)]
mod tests {
    use super::*;
    use turnout::testing::{run, Fields};

    fn event(ty: &str, subject: &str, exts: &[(&str, &str)]) -> Fields {
        Fields {
            id: "1".into(),
            source: "/s".into(),
            ty: ty.into(),
            subject: subject.into(),
            extensions: exts.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            ..Fields::default()
        }
    }

    #[test]
    fn routes() {
        let first = br#"{"filters":[
            {"attribute":"type","prefix":"care.alarm.","outputs":["urgent"]},
            {"attribute":"region","exact":"north","outputs":["north"]},
            {"attribute":"subject","suffix":".low","outputs":["maintenance"]}],
            "default":["archive"]}"#;
        let all = br#"{"match":"all","filters":[
            {"attribute":"type","prefix":"care.alarm.","outputs":["urgent","archive"]},
            {"attribute":"region","exact":"north","outputs":["north","archive"]}]}"#;
        let cases: &[(&[u8], Fields, &str, &[&str])] = &[
            (first, event("care.alarm.fall", "", &[("region", "north")]), "route", &["urgent"]),
            (first, event("care.heartbeat", "", &[("region", "northeast")]), "route", &["archive"]),
            (first, event("care.battery", "battery.low", &[]), "route", &["maintenance"]),
            (all, event("care.alarm.fall", "", &[("region", "north")]), "route", &["urgent", "archive", "north"]),
            (all, event("care.heartbeat", "", &[]), "drop", &[]),
        ];
        for (config, ev, action, outputs) in cases {
            let mut rule = AttrRoute::init(config).unwrap();
            let got = run(&mut rule, ev).unwrap();
            let want: Vec<String> = outputs.iter().map(|s| s.to_string()).collect();
            assert_eq!((got.action, &got.outputs), (*action, &want), "{ev:?}");
            assert!(got.mutations.is_empty());
        }
    }

    #[test]
    fn config_errors() {
        for (config, want) in [
            (&br#"{"filters":[]}"#[..], "attrroute config: filters: at least one filter is required"),
            (br#"{"filters":[],"bogus":1}"#, r#"attrroute config: unknown key "bogus""#),
            (
                br#"{"filters":[{"attribute":"type","outputs":["x"]}]}"#,
                "attrroute config: filters[0]: exactly one of exact, prefix, suffix is required",
            ),
        ] {
            assert_eq!(AttrRoute::init(config).err().as_deref(), Some(want));
        }
    }
}
