//! A broken rule for hostabi's load tests (hostabi/sdkload_rust_test.go): its init panics (a
//! trap, with panic = "abort"). The host must refuse it with init_failed and quote the panic
//! message, which the SDK writes to stderr.

use turnout::{Decision, Event, Rule};

struct Doomed;

impl Rule for Doomed {
    fn init(config: &[u8]) -> Result<Self, String> {
        panic!("initpanic: cannot start with a configuration of {} bytes", config.len());
    }

    fn decide(&mut self, _e: &mut Event<'_>) -> Decision<'_> {
        Decision::drop()
    }
}

turnout::rule!(Doomed);
