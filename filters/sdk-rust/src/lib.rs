//! The guest side of turnout's rule ABI v1 (`hostabi/ABI.md`) for rules written in Rust.
//!
//! A rule is a `cdylib` crate with one type that implements [`Rule`], exported with
//! [`rule!`]:
//!
//! ```ignore
//! use turnout::{Decision, Event, Rule};
//!
//! struct North;
//!
//! impl Rule for North {
//!     fn init(config: &[u8]) -> Result<Self, String> {
//!         if !config.is_empty() {
//!             return Err("north takes no configuration".into());
//!         }
//!         Ok(North)
//!     }
//!     fn decide(&mut self, e: &mut Event<'_>) -> Decision<'_> {
//!         if e.attribute("region") == Some("north") {
//!             e.set_extension("routedby", "north-rule");
//!             return Decision::route("north");
//!         }
//!         Decision::drop()
//!     }
//! }
//!
//! turnout::rule!(North);
//! ```
//!
//! built for `wasm32-unknown-unknown` with `panic = "abort"` (README.md).
//!
//! Invariants: the host calls an instance's exports one at a time, never concurrently and never
//! re-entrantly (ABI.md §1), so the SDK keeps its per-instance state (the ABI buffer, the
//! decision buffer, the rule value) in statics without locking. The `&str` and `&[u8]` an
//! [`Event`] returns are views into the ABI buffer, valid only during `decide` (the borrow
//! checker holds a rule to that); reading an event does not allocate.

mod decision;
mod event;
#[doc(hidden)]
pub mod glue;
pub mod json;
pub mod testing;

pub use decision::{Decision, IntoOutputs};
pub use event::{Event, Extensions};

/// The ABI version this SDK speaks; `turnout_abi_version` returns it.
pub const ABI_VERSION: i32 = 1;

/// A turnout rule: one value per instance, made by [`Rule::init`] from the route's rule
/// configuration, then asked to [`Rule::decide`] one event at a time.
pub trait Rule: Sized + 'static {
    /// Validates the route's rule configuration (JSON by convention, possibly empty) and makes
    /// the rule. An `Err` refuses the configuration: the host reports the message
    /// (`init refused the configuration: <message>`) and does not load the rule. Every instance
    /// gets the same bytes, so a rule must accept again a configuration it accepted once.
    fn init(config: &[u8]) -> Result<Self, String>;

    /// Decides the fate of one event. Mutations made through `event` apply to the routed (or
    /// dead-lettered) copy of the event. The decision may borrow from `self`: build the decisions
    /// you return often once, in `init`.
    fn decide<'a>(&'a mut self, event: &mut Event<'_>) -> Decision<'a>;
}

/// Exports the ABI functions (`turnout_abi_version`, `turnout_buffer`, `turnout_init`,
/// `turnout_decide`) for a type that implements [`Rule`]. Use it once, at the crate's top level:
/// `turnout::rule!(MyRule);`. The module's `memory` is exported by the compiler.
#[macro_export]
macro_rules! rule {
    ($rule:ty) => {
        const _: () = {
            static STATE: $crate::glue::Slot<$rule> = $crate::glue::Slot::new();

            #[no_mangle]
            pub extern "C" fn turnout_abi_version() -> i32 {
                $crate::ABI_VERSION
            }

            #[no_mangle]
            pub extern "C" fn turnout_buffer(size: u32) -> u32 {
                $crate::glue::buffer(size)
            }

            #[no_mangle]
            pub extern "C" fn turnout_init(len: u32) -> u64 {
                $crate::glue::init(&STATE, len)
            }

            #[no_mangle]
            pub extern "C" fn turnout_decide(len: u32) -> u64 {
                $crate::glue::decide(&STATE, len)
            }
        };
    };
}

/// Log levels, as the host's log (slog) numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug = -4,
    Info = 0,
    Warn = 4,
    Error = 8,
}

/// Writes `msg` to the host's log at `level`, tagged with the rule's name and version. The host
/// truncates lines over 4096 bytes and rate-limits a rule's lines (10 per second, bursts of 20),
/// counting those it suppressed. Outside Wasm (native unit tests) it records the line for
/// [`testing::run`], which returns it in [`testing::Outcome::logs`].
pub fn log(level: Level, msg: &str) {
    glue::host_log(level as i32, msg);
}
