//! Native unit tests of a rule (`cargo test`): [`run`] encodes a test event as the host does,
//! runs the rule's `decide` on it through the SDK's own decoding and encoding, and decodes the
//! decision. Make the rule with its `init`, as the host does once per instance:
//!
//! ```ignore
//! let mut rule = MyRule::init(br#"{"outputs":["a"]}"#).unwrap();
//! let got = turnout::testing::run(&mut rule, &Fields { ty: "t".into(), ..Fields::default() }).unwrap();
//! assert_eq!(got.action, "route");
//! ```

use std::cell::RefCell;

use crate::event::{Event, Parsed};
use crate::Rule;

/// A test event. `specversion` defaults to `1.0`; empty optional attributes are absent;
/// `data: None` means the event has no data.
#[derive(Clone, Debug, Default)]
pub struct Fields {
    pub id: String,
    pub source: String,
    pub specversion: String,
    pub ty: String,
    pub datacontenttype: String,
    pub dataschema: String,
    pub subject: String,
    /// RFC 3339.
    pub time: String,
    pub extensions: Vec<(String, String)>,
    pub data: Option<Vec<u8>>,
}

/// One change the rule asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mutation {
    /// `set-attribute`, `remove-attribute`, `set-extension`, `remove-extension`, `set-data`.
    pub op: &'static str,
    pub name: String,
    pub value: Vec<u8>,
}

/// A decoded decision, and what the rule logged while making it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// `drop`, `route` or `fail`.
    pub action: &'static str,
    pub outputs: Vec<String>,
    pub reason: String,
    pub mutations: Vec<Mutation>,
    /// `"<level> <message>"` lines.
    pub logs: Vec<String>,
}

thread_local! {
    static LOGS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn record_log(level: i32, msg: &str) {
    LOGS.with(|l| l.borrow_mut().push(format!("{level} {msg}")));
}

fn put_str(b: &mut Vec<u8>, s: &[u8]) {
    b.extend_from_slice(&(s.len() as u32).to_le_bytes());
    b.extend_from_slice(s);
}

/// Encodes `f` as the host does (ABI.md §4, "Event").
pub fn encode(f: &Fields) -> Vec<u8> {
    let mut b = vec![1];
    let spec = if f.specversion.is_empty() { "1.0" } else { &f.specversion };
    let attrs = [&f.id, &f.source, spec, &f.ty, &f.datacontenttype, &f.dataschema, &f.subject, &f.time];
    for (i, v) in attrs.iter().enumerate() {
        if v.is_empty() && i > 3 {
            b.extend_from_slice(&u32::MAX.to_le_bytes());
        } else {
            put_str(&mut b, v.as_bytes());
        }
    }
    b.extend_from_slice(&(f.extensions.len() as u32).to_le_bytes());
    for (n, v) in &f.extensions {
        put_str(&mut b, n.as_bytes());
        put_str(&mut b, v.as_bytes());
    }
    match &f.data {
        Some(d) => put_str(&mut b, d),
        None => b.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
    b
}

/// Runs `rule` on the event `f` and decodes its decision.
pub fn run<R: Rule>(rule: &mut R, f: &Fields) -> Result<Outcome, String> {
    run_encoded(rule, &encode(f))
}

/// Runs `rule` on the encoded event `input` (ABI.md §4, "Event"), for events [`Fields`] cannot
/// describe, and decodes its decision.
pub fn run_encoded<R: Rule>(rule: &mut R, input: &[u8]) -> Result<Outcome, String> {
    let mut parsed = Parsed::default();
    parsed.parse(input).map_err(|e| format!("sdk: event at byte {}: {}", e.off, e.what))?;
    LOGS.with(|l| l.borrow_mut().clear());
    let mut muts = Vec::new();
    let mut out = Vec::new();
    {
        let mut e = Event::new(input, &parsed, &mut muts);
        let d = rule.decide(&mut e);
        match e.invalid_text() {
            Some(off) => crate::Decision::fail(crate::glue::invalid_text(off)).encode(&mut out, 0, &[]),
            None => {
                let (n, m) = e.mutations();
                d.encode(&mut out, n, m);
            }
        }
    }
    let mut o = decode(&out)?;
    o.logs = LOGS.with(|l| l.borrow_mut().split_off(0));
    Ok(o)
}

/// Decodes a decision (ABI.md §4, "Decision").
pub fn decode(b: &[u8]) -> Result<Outcome, String> {
    let rd = |off: &mut usize, n: usize| -> Result<Vec<u8>, String> {
        let s = b.get(*off..off.saturating_add(n)).ok_or_else(|| format!("decision truncated at byte {off}"))?;
        *off += n;
        Ok(s.to_vec())
    };
    let rd_u32 = |off: &mut usize| -> Result<u32, String> {
        let s = rd(off, 4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    let rd_str = |off: &mut usize| -> Result<Vec<u8>, String> {
        let n = rd_u32(off)? as usize;
        rd(off, n)
    };
    let mut off = 0;
    let action = match rd(&mut off, 1)?[0] {
        1 => "drop",
        2 => "route",
        3 => "fail",
        a => return Err(format!("unknown action {a}")),
    };
    let k = rd_u32(&mut off)?;
    let mut outputs = Vec::new();
    for _ in 0..k {
        outputs.push(String::from_utf8_lossy(&rd_str(&mut off)?).into_owned());
    }
    let reason = String::from_utf8_lossy(&rd_str(&mut off)?).into_owned();
    let m = rd_u32(&mut off)?;
    let mut mutations = Vec::new();
    for _ in 0..m {
        let op = match rd(&mut off, 1)?[0] {
            1 => "set-attribute",
            2 => "remove-attribute",
            3 => "set-extension",
            4 => "remove-extension",
            5 => "set-data",
            op => return Err(format!("unknown mutation op {op}")),
        };
        let name = String::from_utf8_lossy(&rd_str(&mut off)?).into_owned();
        let value = rd_str(&mut off)?;
        mutations.push(Mutation { op, name, value });
    }
    if off != b.len() {
        return Err(format!("decision has trailing bytes at byte {off}"));
    }
    Ok(Outcome { action, outputs, reason, mutations, logs: Vec::new() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Decision, Event};

    /// Routes to its subject, or to "a" without reading anything.
    struct BySubject(bool);

    impl Rule for BySubject {
        fn init(_: &[u8]) -> Result<Self, String> {
            Ok(BySubject(true))
        }
        fn decide(&mut self, e: &mut Event<'_>) -> Decision<'_> {
            if !self.0 {
                return Decision::route("a");
            }
            Decision::route(e.subject().unwrap_or("none").to_string())
        }
    }

    #[test]
    fn text_that_is_not_utf8_fails_the_event_only_when_read() {
        let f =
            Fields { id: "1".into(), source: "/s".into(), ty: "t".into(), subject: "sub".into(), ..Fields::default() };
        let mut input = encode(&f);
        let at = input.windows(3).position(|w| w == b"sub").unwrap();
        input[at + 1] = 0xff;
        let got = run_encoded(&mut BySubject(true), &input).unwrap();
        assert_eq!(
            (got.action, got.reason.as_str()),
            ("fail", format!("sdk: event at byte {}: text that is not UTF-8", at - 4).as_str())
        );
        let got = run_encoded(&mut BySubject(false), &input).unwrap();
        assert_eq!((got.action, got.outputs), ("route", vec!["a".to_string()]));
        let got = run(&mut BySubject(true), &f).unwrap();
        assert_eq!((got.action, got.outputs), ("route", vec!["sub".to_string()]));
    }

    #[test]
    fn malformed_events_fail() {
        let f = Fields { id: "1".into(), source: "/s".into(), ty: "t".into(), ..Fields::default() };
        let input = encode(&f);
        assert_eq!(
            run_encoded(&mut BySubject(true), &input[..input.len() - 1]),
            Err("sdk: event at byte 44: truncated".into())
        );
        let mut longer = input.clone();
        longer.push(0);
        assert_eq!(run_encoded(&mut BySubject(true), &longer), Err("sdk: event at byte 48: trailing bytes".into()));
    }
}
