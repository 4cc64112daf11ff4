//! A broken rule for hostabi's load tests (hostabi/sdkload_rust_test.go): a complete rule that
//! claims ABI version 2, which this host does not speak. The host must refuse it with
//! abi_version_unknown.

use turnout::glue::{self, Slot};
use turnout::{Decision, Event, Rule};

struct FromTheFuture;

impl Rule for FromTheFuture {
    fn init(_config: &[u8]) -> Result<Self, String> {
        Ok(FromTheFuture)
    }

    fn decide(&mut self, _e: &mut Event<'_>) -> Decision<'_> {
        Decision::route("a")
    }
}

static STATE: Slot<FromTheFuture> = Slot::new();

#[no_mangle]
pub extern "C" fn turnout_abi_version() -> i32 {
    2
}

#[no_mangle]
pub extern "C" fn turnout_buffer(size: u32) -> u32 {
    glue::buffer(size)
}

#[no_mangle]
pub extern "C" fn turnout_init(len: u32) -> u64 {
    glue::init(&STATE, len)
}

#[no_mangle]
pub extern "C" fn turnout_decide(len: u32) -> u64 {
    glue::decide(&STATE, len)
}
