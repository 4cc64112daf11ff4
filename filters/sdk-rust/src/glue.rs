//! The exports' bodies, which [`rule!`](crate::rule) wires up (ABI.md §2, §3). Public so that a
//! module can export them by hand (the SDK's tests build deliberately broken rules that way);
//! a rule normally uses `rule!` alone.
//!
//! Invariant: the host calls one export at a time per instance and never re-enters one, and a
//! Wasm instance has one thread, so the state below is only ever touched by one call at a time.

use std::cell::UnsafeCell;

use crate::event::{Event, Parsed};
use crate::Rule;

/// A per-instance global; see the module invariant for why it needs no lock.
pub struct Slot<T>(UnsafeCell<Option<T>>);

// SAFETY: a Wasm instance is single-threaded and the host never calls it concurrently (module
// invariant); natively, the exports are never called.
unsafe impl<T> Sync for Slot<T> {}

impl<T> Slot<T> {
    pub const fn new() -> Self {
        Slot(UnsafeCell::new(None))
    }

    /// SAFETY: the caller is an export (module invariant) and holds no other reference
    /// from this slot.
    #[allow(clippy::mut_from_ref)]
    unsafe fn get(&self) -> &mut Option<T> {
        &mut *self.0.get()
    }
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The SDK's own per-instance state.
#[derive(Default)]
struct Runtime {
    /// The ABI buffer: the host writes the configuration and each event here.
    buf: Vec<u8>,
    /// The encoded decision or init error of the last call.
    out: Vec<u8>,
    /// The mutations the rule recorded for the current event.
    muts: Vec<u8>,
    parsed: Parsed,
}

static RUNTIME: Slot<Runtime> = Slot::new();

fn runtime() -> &'static mut Runtime {
    // SAFETY: module invariant; each export takes this reference once.
    unsafe { RUNTIME.get().get_or_insert_with(Runtime::default) }
}

/// Packs a region as the ABI's location: `ptr << 32 | len` (0 for an empty region).
fn location(b: &[u8]) -> u64 {
    if b.is_empty() {
        return 0;
    }
    (b.as_ptr() as usize as u64) << 32 | b.len() as u64
}

/// `turnout_buffer(size)`: a pointer to at least `size` bytes, reserved until the next call.
pub fn buffer(size: u32) -> u32 {
    let rt = runtime();
    let want = (size as usize).max(4096).next_power_of_two();
    if rt.buf.len() < size as usize {
        rt.buf = vec![0; want];
    }
    rt.buf.as_mut_ptr() as usize as u32
}

/// The ABI buffer's first `len` bytes, or nothing when the host sent more than it reserved.
fn input(rt: &Runtime, len: u32) -> &[u8] {
    rt.buf.get(..len as usize).unwrap_or(&[])
}

/// `turnout_init(len)`: makes the rule from the configuration in the ABI buffer; 0, or the
/// location of the refusal's message.
pub fn init<R: Rule>(slot: &Slot<R>, len: u32) -> u64 {
    install_panic_hook();
    let rt = runtime();
    // SAFETY: module invariant.
    let state = unsafe { slot.get() };
    let config = input(rt, len).to_vec();
    match R::init(&config) {
        Ok(r) => {
            *state = Some(r);
            0
        }
        Err(msg) => {
            *state = None;
            rt.out.clear();
            rt.out.extend_from_slice(msg.as_bytes());
            if rt.out.is_empty() {
                rt.out.extend_from_slice(b"init failed");
            }
            location(&rt.out)
        }
    }
}

/// `turnout_decide(len)`: decides the event in the ABI buffer; the location of the encoded
/// decision.
pub fn decide<R: Rule>(slot: &Slot<R>, len: u32) -> u64 {
    let rt = runtime();
    // SAFETY: module invariant.
    let state = unsafe { slot.get() };
    let Runtime { buf, out, muts, parsed } = rt;
    let input = buf.get(..len as usize).unwrap_or(&[]);
    let failed = match (parsed.parse(input), state.as_mut()) {
        (Err(e), _) => crate::Decision::fail(format!("sdk: event at byte {}: {}", e.off, e.what)),
        (Ok(()), None) => crate::Decision::fail("sdk: turnout_decide before a successful turnout_init"),
        (Ok(()), Some(rule)) => {
            let mut e = Event::new(input, parsed, muts);
            let d = rule.decide(&mut e);
            match e.invalid_text() {
                Some(off) => crate::Decision::fail(invalid_text(off)),
                None => {
                    let (n, m) = e.mutations();
                    d.encode(out, n, m);
                    return location(out);
                }
            }
        }
    };
    failed.encode(out, 0, &[]);
    location(out)
}

/// The reason of the failure of an event whose text at `off` the rule read is not UTF-8.
pub(crate) fn invalid_text(off: u32) -> String {
    format!("sdk: event at byte {off}: text that is not UTF-8")
}

#[cfg(target_arch = "wasm32")]
mod host {
    #[link(wasm_import_module = "turnout")]
    extern "C" {
        pub fn log(level: i32, ptr: *const u8, len: usize);
    }

    #[repr(C)]
    pub struct IoVec {
        pub ptr: *const u8,
        pub len: usize,
    }

    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    extern "C" {
        pub fn fd_write(fd: i32, iovs: *const IoVec, n: usize, written: *mut usize) -> u16;
    }
}

/// Writes a line to the host log (`turnout.log`).
pub fn host_log(level: i32, msg: &str) {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: the host reads len bytes at ptr, which msg holds, during the call.
    unsafe {
        host::log(level, msg.as_ptr(), msg.len())
    }
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::record_log(level, msg);
}

/// Writes to stderr, which the host captures per call and quotes in the error of a failed call.
#[cfg(target_arch = "wasm32")]
fn stderr(msg: &[u8]) {
    let mut rest = msg;
    while !rest.is_empty() {
        let iov = host::IoVec { ptr: rest.as_ptr(), len: rest.len() };
        let mut n = 0usize;
        // SAFETY: iov describes rest, alive during the call; n is written by the host.
        let errno = unsafe { host::fd_write(2, &iov, 1, &mut n) };
        if errno != 0 || n == 0 || n > rest.len() {
            return;
        }
        rest = &rest[n..];
    }
}

/// Makes a panic print its message to stderr before the instance traps (panic = "abort"), so
/// that the host's error for the failed call says why: `init: ... (stderr: rule panicked at
/// ...)`. Without it, wasm32-unknown-unknown drops the message.
fn install_panic_hook() {
    #[cfg(target_arch = "wasm32")]
    {
        static INSTALLED: Slot<()> = Slot::new();
        // SAFETY: module invariant.
        let done = unsafe { INSTALLED.get() };
        if done.is_none() {
            *done = Some(());
            std::panic::set_hook(Box::new(|info| {
                stderr(format!("rule {info}\n").as_bytes());
            }));
        }
    }
}
