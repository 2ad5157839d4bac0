//! Event bodies: the inside of a JSON object, built without surprises.
//!
//! `EMIT` takes `"k":v,...` text and checks only that it is one line
//! starting with a quote, so the server must produce valid JSON itself:
//! every string goes through [`escape`], addresses are `"0x…"` strings
//! (as in the kernel's events: JSON numbers lose precision above 2^53),
//! and a body never exceeds [`MAX_BODY`] (the kernel's limit): text fields
//! are cut to fit rather than the event being refused.

use alloc::string::String;
use core::fmt::Write;

/// The kernel's limit on an `EMIT` body.
pub const MAX_BODY: usize = 2048;

/// A body under construction.
#[derive(Default)]
pub struct Body {
    text: String,
}

impl Body {
    pub fn new() -> Body {
        Body::default()
    }

    /// A body for an event that happened at guest TSC `tsc` (the report is
    /// made later; the kernel stamps the event with this time).
    pub fn at(tsc: u64) -> Body {
        Body::new().u64("tsc", tsc)
    }

    fn key(&mut self, k: &str) {
        if !self.text.is_empty() {
            self.text.push(',');
        }
        self.text.push('"');
        self.text.push_str(k);
        self.text.push_str("\":");
    }

    pub fn u64(mut self, k: &str, v: u64) -> Body {
        self.key(k);
        let _ = write!(self.text, "{v}");
        self
    }

    pub fn bool(mut self, k: &str, v: bool) -> Body {
        self.key(k);
        self.text.push_str(if v { "true" } else { "false" });
        self
    }

    pub fn hex(mut self, k: &str, v: u64) -> Body {
        self.key(k);
        let _ = write!(self.text, "\"{v:#x}\"");
        self
    }

    /// A string field, cut to at most `max` bytes of its text.
    pub fn str_max(mut self, k: &str, v: &str, max: usize) -> Body {
        self.key(k);
        self.text.push('"');
        escape(&mut self.text, v, max);
        self.text.push('"');
        self
    }

    pub fn str(self, k: &str, v: &str) -> Body {
        self.str_max(k, v, 256)
    }

    /// A field whose value is already JSON (an array built by the caller).
    pub fn raw(mut self, k: &str, json: &str) -> Body {
        self.key(k);
        self.text.push_str(json);
        self
    }

    /// This body followed by the fields of `other`.
    pub fn then(mut self, other: &Body) -> Body {
        if !other.text.is_empty() {
            if !self.text.is_empty() {
                self.text.push(',');
            }
            self.text.push_str(&other.text);
        }
        self
    }

    pub fn len(&self) -> usize {
        self.text.len()
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Appends `s` JSON-escaped, at most `max` bytes of it (cut at a character).
pub fn escape(out: &mut String, s: &str, max: usize) {
    for (i, c) in s.char_indices() {
        if i + c.len_utf8() > max {
            break;
        }
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}
