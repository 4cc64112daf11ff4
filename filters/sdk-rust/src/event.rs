//! The event view (ABI.md §4, "Event") and the mutations a rule records on it.

use std::cell::Cell;

// Indexes of the context attributes, in the order the encoded event holds them.
const ID: usize = 0;
const SOURCE: usize = 1;
const SPECVERSION: usize = 2;
const TYPE: usize = 3;
const DATACONTENTTYPE: usize = 4;
const DATASCHEMA: usize = 5;
const SUBJECT: usize = 6;
const TIME: usize = 7;

const ABSENT: u32 = 0xFFFF_FFFF;

// Mutation ops (ABI.md §4, "Decision").
const OP_SET_ATTRIBUTE: u8 = 1;
const OP_REMOVE_ATTRIBUTE: u8 = 2;
const OP_SET_EXTENSION: u8 = 3;
const OP_REMOVE_EXTENSION: u8 = 4;
const OP_SET_DATA: u8 = 5;

/// A byte range of the ABI buffer.
#[derive(Clone, Copy, Default)]
pub(crate) struct Span {
    off: u32,
    len: u32,
}

/// The spans of one parsed event, kept by the SDK between events so that parsing does not
/// allocate once the extension list has grown to the largest event seen.
#[derive(Default)]
pub(crate) struct Parsed {
    attrs: [Span; 8],
    present: u8,
    exts: Vec<(Span, Span)>,
    data: Option<Span>,
    /// The offset of the first text the rule read that is not UTF-8 (see Event).
    invalid: Cell<Option<u32>>,
}

/// Why an event could not be parsed: what, and at which byte.
pub(crate) struct ParseError {
    pub(crate) what: &'static str,
    pub(crate) off: usize,
}

struct Reader<'a> {
    b: &'a [u8],
    off: usize,
}

impl<'a> Reader<'a> {
    #[inline(always)]
    fn u32(&mut self) -> Option<u32> {
        let s = self.b.get(self.off..self.off + 4)?;
        self.off += 4;
        Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    /// Reads a length-prefixed string: `Some(None)` for the absent marker when `absent_ok`,
    /// `None` when the buffer ends first.
    #[inline(always)]
    fn str(&mut self, absent_ok: bool) -> Option<Option<Span>> {
        let n = self.u32()?;
        if n == ABSENT && absent_ok {
            return Some(None);
        }
        if n as usize > self.b.len() - self.off {
            return None;
        }
        let s = Span { off: self.off as u32, len: n };
        self.off += n as usize;
        Some(Some(s))
    }

    fn err(&self, what: &'static str) -> ParseError {
        ParseError { what, off: self.off }
    }
}

fn bytes(b: &[u8], s: Span) -> &[u8] {
    &b[s.off as usize..(s.off + s.len) as usize]
}

impl Parsed {
    /// Indexes the encoded event `b`, checking every length. Text is checked for UTF-8 when the
    /// rule reads it: a check of every attribute here would cost a quarter of a rule call.
    pub(crate) fn parse(&mut self, b: &[u8]) -> Result<(), ParseError> {
        self.present = 0;
        self.exts.clear();
        self.data = None;
        self.invalid.set(None);
        let mut r = Reader { b, off: 0 };
        match b.first() {
            Some(1) => r.off = 1,
            Some(_) => return Err(ParseError { what: "unknown event format version", off: 0 }),
            None => return Err(r.err("truncated")),
        }
        for i in 0..8 {
            match r.str(true) {
                Some(Some(s)) => {
                    self.attrs[i] = s;
                    self.present |= 1 << i;
                }
                Some(None) => {}
                None => return Err(r.err("truncated")),
            }
        }
        let n = match r.u32() {
            Some(n) if n as u64 * 8 <= (b.len() - r.off) as u64 => n,
            _ => return Err(r.err("truncated")),
        };
        self.exts.reserve(n as usize);
        for _ in 0..n {
            let name = match r.str(false) {
                Some(Some(name)) => name,
                _ => return Err(r.err("truncated")),
            };
            match r.str(false) {
                Some(Some(value)) => self.exts.push((name, value)),
                _ => return Err(r.err("truncated")),
            }
        }
        self.data = match r.str(true) {
            Some(d) => d,
            None => return Err(r.err("truncated")),
        };
        if r.off != b.len() {
            return Err(r.err("trailing bytes"));
        }
        Ok(())
    }
}

/// The event being decided. Its accessors are views into the ABI buffer, valid while
/// [`Rule::decide`](crate::Rule::decide) runs. The mutations (`set_*`, `remove_*`) are recorded
/// and applied by the host, in order, to a copy of the event once `decide` returns; the
/// accessors keep returning the original values. The host validates each mutation (names,
/// `time` in RFC 3339 form): a bad one makes the whole decision a decode error.
///
/// Text is checked for UTF-8 as the rule reads it. An accessor that meets an attribute or
/// extension that is not UTF-8 returns `""` for it, and the SDK then fails the event (reason
/// `sdk: event at byte N: text that is not UTF-8`) whatever `decide` returned: a decision made
/// on that `""` is not used. Text the rule does not read is not checked.
pub struct Event<'a> {
    buf: &'a [u8],
    p: &'a Parsed,
    muts: &'a mut Vec<u8>,
    nmuts: u32,
}

/// The text at `s`, or "" when it is not UTF-8, which `p` then records for the SDK to fail the
/// event instead of using a decision made on that "".
fn text<'a>(b: &'a [u8], p: &Parsed, s: Span) -> &'a str {
    match core::str::from_utf8(bytes(b, s)) {
        Ok(t) => t,
        Err(_) => {
            if p.invalid.get().is_none() {
                p.invalid.set(Some(s.off - 4));
            }
            ""
        }
    }
}

impl<'a> Event<'a> {
    pub(crate) fn new(buf: &'a [u8], p: &'a Parsed, muts: &'a mut Vec<u8>) -> Self {
        muts.clear();
        Event { buf, p, muts, nmuts: 0 }
    }

    pub(crate) fn mutations(&self) -> (u32, &[u8]) {
        (self.nmuts, self.muts)
    }

    /// The offset (of its length) of the first text the rule read that is not UTF-8.
    pub(crate) fn invalid_text(&self) -> Option<u32> {
        self.p.invalid.get()
    }

    fn attr(&self, i: usize) -> Option<&'a str> {
        if self.p.present & (1 << i) == 0 {
            return None;
        }
        Some(text(self.buf, self.p, self.p.attrs[i]))
    }

    /// The id attribute.
    pub fn id(&self) -> &'a str {
        self.attr(ID).unwrap_or("")
    }

    /// The source attribute.
    pub fn source(&self) -> &'a str {
        self.attr(SOURCE).unwrap_or("")
    }

    /// The specversion attribute.
    pub fn specversion(&self) -> &'a str {
        self.attr(SPECVERSION).unwrap_or("")
    }

    /// The type attribute (`type` is a Rust keyword).
    pub fn ty(&self) -> &'a str {
        self.attr(TYPE).unwrap_or("")
    }

    /// The subject attribute, `None` when absent.
    pub fn subject(&self) -> Option<&'a str> {
        self.attr(SUBJECT)
    }

    /// The time attribute in RFC 3339 form (UTC), `None` when absent.
    pub fn time(&self) -> Option<&'a str> {
        self.attr(TIME)
    }

    /// The datacontenttype attribute, `None` when absent.
    pub fn datacontenttype(&self) -> Option<&'a str> {
        self.attr(DATACONTENTTYPE)
    }

    /// The dataschema attribute, `None` when absent.
    pub fn dataschema(&self) -> Option<&'a str> {
        self.attr(DATASCHEMA)
    }

    /// The context attribute called `name` or, when `name` is not a context attribute, the
    /// extension called `name`, in its CloudEvents string form.
    pub fn attribute(&self, name: &str) -> Option<&'a str> {
        let i = match name {
            "id" => ID,
            "source" => SOURCE,
            "specversion" => SPECVERSION,
            "type" => TYPE,
            "datacontenttype" => DATACONTENTTYPE,
            "dataschema" => DATASCHEMA,
            "subject" => SUBJECT,
            "time" => TIME,
            _ => return self.extension(name),
        };
        self.attr(i)
    }

    /// The value of the extension called `name`, in its CloudEvents string form (integers in
    /// decimal, booleans `true`/`false`, binary values in base64, times in RFC 3339).
    pub fn extension(&self, name: &str) -> Option<&'a str> {
        self.p
            .exts
            .iter()
            .find(|(n, _)| bytes(self.buf, *n) == name.as_bytes())
            .map(|(_, v)| text(self.buf, self.p, *v))
    }

    /// The number of extensions.
    pub fn num_extensions(&self) -> usize {
        self.p.exts.len()
    }

    /// The extensions as `(name, value)` pairs, in no particular order.
    pub fn extensions(&self) -> Extensions<'a> {
        Extensions { buf: self.buf, p: self.p, exts: self.p.exts.iter() }
    }

    /// The event's data bytes as received (empty when it has none: see [`Event::has_data`]).
    pub fn data(&self) -> &'a [u8] {
        match self.p.data {
            Some(s) => bytes(self.buf, s),
            None => &[],
        }
    }

    /// Whether the event carries data (possibly empty).
    pub fn has_data(&self) -> bool {
        self.p.data.is_some()
    }

    fn mutate(&mut self, op: u8, name: &str, value: &[u8]) {
        self.muts.reserve(9 + name.len() + value.len());
        self.muts.push(op);
        self.muts.extend_from_slice(&(name.len() as u32).to_le_bytes());
        self.muts.extend_from_slice(name.as_bytes());
        self.muts.extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.muts.extend_from_slice(value);
        self.nmuts += 1;
    }

    /// Sets a context attribute (`id`, `source`, `type`, `subject`, `time`, `datacontenttype`,
    /// `dataschema`) of the routed event; `time` must be RFC 3339.
    pub fn set_attribute(&mut self, name: &str, value: &str) {
        self.mutate(OP_SET_ATTRIBUTE, name, value.as_bytes());
    }

    /// Removes an optional context attribute (`subject`, `time`, `datacontenttype`,
    /// `dataschema`) from the routed event.
    pub fn remove_attribute(&mut self, name: &str) {
        self.mutate(OP_REMOVE_ATTRIBUTE, name, &[]);
    }

    /// Sets extension `name` (lower-case `a-z0-9`, not a context attribute name) of the routed
    /// event to a string value.
    pub fn set_extension(&mut self, name: &str, value: &str) {
        self.mutate(OP_SET_EXTENSION, name, value.as_bytes());
    }

    /// Removes extension `name` from the routed event.
    pub fn remove_extension(&mut self, name: &str) {
        self.mutate(OP_REMOVE_EXTENSION, name, &[]);
    }

    /// Replaces the routed event's data; `datacontenttype` is kept unless also set.
    pub fn set_data(&mut self, data: &[u8]) {
        self.mutate(OP_SET_DATA, "", data);
    }
}

/// An iterator over an event's extensions as `(name, value)`; see [`Event::extensions`].
pub struct Extensions<'a> {
    buf: &'a [u8],
    p: &'a Parsed,
    exts: core::slice::Iter<'a, (Span, Span)>,
}

impl<'a> Iterator for Extensions<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        self.exts.next().map(|(n, v)| (text(self.buf, self.p, *n), text(self.buf, self.p, *v)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.exts.size_hint()
    }
}

impl ExactSizeIterator for Extensions<'_> {}
