//! A broken rule for hostabi's load tests (hostabi/sdkload_rust_test.go): it exports the ABI by
//! hand, as turnout::rule! would, but forgets turnout_decide. The host must refuse it with
//! export_missing.

use turnout::glue::{self, Slot};
use turnout::{Decision, Event, Rule};

struct Forgetful;

impl Rule for Forgetful {
    fn init(_config: &[u8]) -> Result<Self, String> {
        Ok(Forgetful)
    }

    fn decide(&mut self, _e: &mut Event<'_>) -> Decision<'_> {
        Decision::drop()
    }
}

static STATE: Slot<Forgetful> = Slot::new();

#[no_mangle]
pub extern "C" fn turnout_abi_version() -> i32 {
    turnout::ABI_VERSION
}

#[no_mangle]
pub extern "C" fn turnout_buffer(size: u32) -> u32 {
    glue::buffer(size)
}

#[no_mangle]
pub extern "C" fn turnout_init(len: u32) -> u64 {
    glue::init(&STATE, len)
}
