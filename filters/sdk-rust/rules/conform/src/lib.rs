//! conform, the ABI conformance rule, written with the Rust SDK: every rule SDK (Go,
//! AssemblyScript, Rust) has a build of the same rule, and the conformance suite
//! (hostabi/conformance_test.go) runs each through the real host and compares every decision
//! with one golden file. Its behaviour, by the event's type, follows the Go build
//! (filters/sdk/testdata/conform), which writes that file.

use std::ptr::{addr_of_mut, read_volatile, write_volatile};

use turnout::{json, Decision, Event, Level, Rule};

struct Conform {
    tag: String,
}

fn configure(raw: &[u8]) -> Result<Conform, String> {
    let mut c = Conform { tag: String::new() };
    if raw.is_empty() {
        return Ok(c);
    }
    let mut refuse = None;
    let mut seen = false;
    json::each(raw, |key, v| {
        let key = match key {
            Some(k) if !seen => String::from_utf8_lossy(k).into_owned(),
            _ => return Err("want an object with one key".into()),
        };
        seen = true;
        let s = json::string(v).ok_or_else(|| format!("{key}: want a string"))?;
        match key.as_str() {
            "tag" => c.tag = s,
            "refuse" => refuse = Some(s),
            _ => return Err(format!("unknown key {key:?}")),
        }
        Ok(())
    })
    .map_err(|e| format!("conform config: {e}"))?;
    match refuse {
        Some(msg) => Err(msg),
        None => Ok(c),
    }
}

/// What the endless loop of conform.loop keeps writing, so that it is not optimised away.
static mut SINK: u64 = 0;

impl Rule for Conform {
    fn init(config: &[u8]) -> Result<Self, String> {
        configure(config)
    }

    fn decide(&mut self, e: &mut Event<'_>) -> Decision<'_> {
        match e.ty() {
            "conform.drop" => Decision::drop(),
            "conform.route" => Decision::route("a"),
            "conform.fanout" => Decision::route(&["a", "b", "c"]),
            "conform.fail" => Decision::fail(format!("failed: {}", e.subject().unwrap_or(""))),
            "conform.echo" => {
                e.set_extension("seen", e.id());
                e.set_extension("next", &e.num_extensions().to_string());
                let datalen = if e.has_data() { e.data().len().to_string() } else { "none".into() };
                e.set_extension("datalen", &datalen);
                e.set_extension("tag", &self.tag);
                Decision::route("a")
            }
            "conform.attrs" => {
                let all = [
                    e.id(),
                    e.source(),
                    e.specversion(),
                    e.ty(),
                    e.datacontenttype().unwrap_or(""),
                    e.dataschema().unwrap_or(""),
                    e.subject().unwrap_or(""),
                    e.time().unwrap_or(""),
                ];
                e.set_extension("all", &all.join("|"));
                // Sorted as the Go build sorts them: the name=value strings, byte order.
                let mut exts: Vec<String> = e.extensions().map(|(n, v)| format!("{n}={v}")).collect();
                exts.sort();
                e.set_extension("exts", &exts.join(";"));
                Decision::route("a")
            }
            "conform.mutate" => {
                for (name, value) in [
                    ("id", "new-id"),
                    ("source", "/new"),
                    ("type", "conform.mutated"),
                    ("subject", "ß-subject ✓"),
                    ("time", "2026-01-02T03:04:05Z"),
                    ("datacontenttype", "text/plain"),
                    ("dataschema", "https://example.org/s"),
                ] {
                    e.set_attribute(name, value);
                }
                e.remove_extension("x");
                e.set_extension("added", "ü");
                let mut data = b"mutated: ".to_vec();
                data.extend_from_slice(e.data());
                e.set_data(&data);
                Decision::route("a")
            }
            "conform.remove" => {
                for name in ["subject", "time", "datacontenttype", "dataschema"] {
                    e.remove_attribute(name);
                }
                Decision::route("a")
            }
            "conform.log" => {
                turnout::log(Level::Info, &format!("conform log: {}", e.id()));
                Decision::drop()
            }
            "conform.trap" => panic!("conform: trap requested"),
            "conform.loop" => loop {
                // SAFETY: one call at a time per instance (the SDK's invariant).
                unsafe { write_volatile(addr_of_mut!(SINK), read_volatile(addr_of_mut!(SINK)).wrapping_add(1)) }
            },
            "conform.badoutput" => Decision::route("nope"),
            _ => Decision::route("default"),
        }
    }
}

turnout::rule!(Conform);
