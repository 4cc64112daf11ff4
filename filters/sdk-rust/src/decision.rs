//! Decisions (ABI.md §4, "Decision") and their encoding.

use std::borrow::Cow;

const ACTION_DROP: u8 = 1;
const ACTION_ROUTE: u8 = 2;
const ACTION_FAIL: u8 = 3;

/// The output names of a route decision, borrowed or owned.
enum Outputs<'a> {
    None,
    One(&'a str),
    OneOwned(String),
    Strs(&'a [&'a str]),
    Strings(&'a [String]),
    StrVec(Vec<&'a str>),
    StringVec(Vec<String>),
}

impl Outputs<'_> {
    fn for_each(&self, mut f: impl FnMut(&str)) {
        match self {
            Outputs::None => {}
            Outputs::One(s) => f(s),
            Outputs::OneOwned(s) => f(s),
            Outputs::Strs(v) => v.iter().for_each(|s| f(s)),
            Outputs::Strings(v) => v.iter().for_each(|s| f(s)),
            Outputs::StrVec(v) => v.iter().for_each(|s| f(s)),
            Outputs::StringVec(v) => v.iter().for_each(|s| f(s)),
        }
    }
}

/// What [`Decision::route`] accepts: one output name, or a list of them, borrowed or owned.
pub trait IntoOutputs<'a> {
    #[doc(hidden)]
    fn into_outputs(self) -> Decision<'a>;
}

fn route(o: Outputs<'_>) -> Decision<'_> {
    Decision { action: ACTION_ROUTE, outputs: o, reason: Cow::Borrowed("") }
}

impl<'a> IntoOutputs<'a> for &'a str {
    fn into_outputs(self) -> Decision<'a> {
        route(Outputs::One(self))
    }
}

impl<'a> IntoOutputs<'a> for &'a String {
    fn into_outputs(self) -> Decision<'a> {
        route(Outputs::One(self))
    }
}

impl<'a> IntoOutputs<'a> for String {
    fn into_outputs(self) -> Decision<'a> {
        route(Outputs::OneOwned(self))
    }
}

impl<'a> IntoOutputs<'a> for &'a [&'a str] {
    fn into_outputs(self) -> Decision<'a> {
        route(Outputs::Strs(self))
    }
}

impl<'a, const N: usize> IntoOutputs<'a> for &'a [&'a str; N] {
    fn into_outputs(self) -> Decision<'a> {
        route(Outputs::Strs(self))
    }
}

impl<'a> IntoOutputs<'a> for &'a [String] {
    fn into_outputs(self) -> Decision<'a> {
        route(Outputs::Strings(self))
    }
}

impl<'a> IntoOutputs<'a> for &'a Vec<String> {
    fn into_outputs(self) -> Decision<'a> {
        route(Outputs::Strings(self))
    }
}

impl<'a> IntoOutputs<'a> for Vec<&'a str> {
    fn into_outputs(self) -> Decision<'a> {
        route(Outputs::StrVec(self))
    }
}

impl<'a> IntoOutputs<'a> for Vec<String> {
    fn into_outputs(self) -> Decision<'a> {
        route(Outputs::StringVec(self))
    }
}

/// A rule's verdict on one event: build it with [`Decision::drop`], [`Decision::route`] or
/// [`Decision::fail`].
pub struct Decision<'a> {
    action: u8,
    outputs: Outputs<'a>,
    reason: Cow<'a, str>,
}

impl<'a> Decision<'a> {
    /// Acknowledges the event without sending it anywhere (mutations are ignored).
    pub fn drop() -> Self {
        Decision { action: ACTION_DROP, outputs: Outputs::None, reason: Cow::Borrowed("") }
    }

    /// Sends the event, with its mutations, to the named outputs of the route: one name
    /// (`"a"`, `&String`, `String`), or a list (`&["a", "b"]`, `&Vec<String>`, `Vec<&str>`,
    /// `Vec<String>`). A route needs at least one output; a name the route does not have sends
    /// the event to the dead-letter output.
    pub fn route(outputs: impl IntoOutputs<'a>) -> Self {
        outputs.into_outputs()
    }

    /// Sends the event, with its mutations, to the route's dead-letter output with `reason`.
    pub fn fail(reason: impl Into<Cow<'a, str>>) -> Self {
        Decision { action: ACTION_FAIL, outputs: Outputs::None, reason: reason.into() }
    }

    /// Encodes the decision with the `n` mutations `muts` into `out` (cleared first).
    pub(crate) fn encode(&self, out: &mut Vec<u8>, n: u32, muts: &[u8]) {
        let mut size = 1 + 4 + 4 + self.reason.len() + 4 + muts.len();
        let mut k = 0u32;
        self.outputs.for_each(|o| {
            size += 4 + o.len();
            k += 1;
        });
        out.clear();
        out.reserve(size);
        let mut w = Writer(out.spare_capacity_mut().as_mut_ptr() as *mut u8);
        // SAFETY: out has room for size bytes, the sum of what the writes below write.
        unsafe {
            w.bytes(&[self.action]);
            w.bytes(&k.to_le_bytes());
            self.outputs.for_each(|o| w.str(o.as_bytes()));
            w.str(self.reason.as_bytes());
            w.bytes(&n.to_le_bytes());
            w.bytes(muts);
            out.set_len(size);
        }
    }
}

/// Writes into reserved memory: one bounds check (the reserve) per decision instead of one per
/// write, which a Wasm compiler does not merge.
struct Writer(*mut u8);

impl Writer {
    /// SAFETY: the caller reserved room for b after the current position.
    #[inline(always)]
    unsafe fn bytes(&mut self, b: &[u8]) {
        std::ptr::copy_nonoverlapping(b.as_ptr(), self.0, b.len());
        self.0 = self.0.add(b.len());
    }

    /// SAFETY: the caller reserved room for 4 + s.len() bytes after the current position.
    #[inline(always)]
    unsafe fn str(&mut self, s: &[u8]) {
        self.bytes(&(s.len() as u32).to_le_bytes());
        self.bytes(s);
    }
}
