//! Byte-exact Python `json.dumps` encoding, as a [`serde_json`] formatter.
//!
//! [`PythonFormatter`] is a [`serde_json::ser::Formatter`] that makes a
//! [`serde_json::Serializer`] write exactly the bytes `CPython`'s
//! `json.dumps(obj)` produces with default arguments — or, with
//! `ensure_ascii` off, those of `json.dumps(obj, ensure_ascii=False)`:
//!
//! * separators `", "` and `": "`, object key order preserved (`serde_json` is
//!   built with `preserve_order`), `[]` / `{}` for empty containers;
//! * `"`, `\`, `\n`, `\r`, `\t`, `\b`, `\f` as short escapes, the other
//!   control characters below `0x20` as `\u00XX` with lowercase hex; `/` is
//!   not escaped;
//! * `ensure_ascii=True` (the default): every other character outside
//!   `' '..='~'` (DEL `0x7f` and all non-ASCII) is written as `\uXXXX`,
//!   characters above the BMP as a UTF-16 surrogate pair;
//!   `ensure_ascii=False`: those characters are written as they are;
//! * integers as plain decimal digits, floats as Python's `repr(float)`:
//!   shortest round-trip digits (ties between two equally close candidates
//!   broken to the even digit), fixed notation when the decimal exponent is in
//!   Python's range (`1.0`, `0.0001`, `1000000000000000.0`, `-0.0`),
//!   scientific otherwise (`1e+16`, `1e-05`, `1.5e+300`).
//!
//! Why it matters: content search runs SQL `LIKE` on these stored bytes, and
//! database files are shared with the Python SDK, so a row written here must
//! be indistinguishable from one written by Python (same escapes, same
//! spacing, same float spelling), or searches and round-trips diverge.
//! [`to_python_json`] and [`write_python_json`] are the encodings the store
//! writes `message_data` with; [`to_python_json_unicode`] is the
//! `ensure_ascii=False` text the SDK shows in previews.
//!
//! ```
//! use agent_sessions::json::{to_python_json, to_python_json_unicode};
//! use serde_json::json;
//!
//! let item = json!({"role": "user", "content": "héllo", "n": [1e16, 0.5]});
//! assert_eq!(to_python_json(&item), r#"{"role": "user", "content": "h\u00e9llo", "n": [1e+16, 0.5]}"#);
//! assert_eq!(to_python_json_unicode(&item), r#"{"role": "user", "content": "héllo", "n": [1e+16, 0.5]}"#);
//! ```
//!
//! The encoder never panics. `serde_json` recurses once per nesting level; its
//! parser already caps nesting at 128 levels, which is far below any stack
//! limit, but a `Value` built by hand with extreme depth (tens of thousands of
//! levels) could exhaust the stack.

use std::io;

use serde::Serialize as _;
use serde_json::ser::{CharEscape, Formatter};
use serde_json::{Serializer, Value};

/// Encodes `value` the way Python's `json.dumps(value)` does (`ensure_ascii=True`: the result is
/// pure ASCII).
///
/// ```
/// use agent_sessions::json::to_python_json;
/// use serde_json::json;
///
/// let v = json!({"text": "naïve ☃", "ok": true, "xs": [1, 2.0, null]});
/// assert_eq!(to_python_json(&v), r#"{"text": "na\u00efve \u2603", "ok": true, "xs": [1, 2.0, null]}"#);
/// ```
#[must_use]
pub fn to_python_json(value: &Value) -> String {
    let mut out = String::new();
    write_python_json(&mut out, value);
    out
}

/// Appends the Python `json.dumps` encoding of `value` to `out` (reusing its capacity: the
/// store encodes a batch of items through one buffer).
///
/// ```
/// use agent_sessions::json::write_python_json;
/// use serde_json::json;
///
/// let mut row = String::from("data=");
/// write_python_json(&mut row, &json!({"a": [1, 2.5], "b": "\n"}));
/// assert_eq!(row, r#"data={"a": [1, 2.5], "b": "\n"}"#);
/// ```
pub fn write_python_json(out: &mut String, value: &Value) {
    append(out, value, PythonFormatter::new(true));
}

/// Encodes `value` the way Python's `json.dumps(value, ensure_ascii=False)` does: as
/// [`to_python_json`], but with every character from DEL `0x7f` up written as itself rather than
/// as a `\uXXXX` escape (control characters below `0x20` stay escaped).
///
/// ```
/// use agent_sessions::json::to_python_json_unicode;
/// use serde_json::json;
///
/// let v = json!(["é中😀", "tab\there", 0.1]);
/// assert_eq!(to_python_json_unicode(&v), r#"["é中😀", "tab\there", 0.1]"#);
/// ```
#[must_use]
pub fn to_python_json_unicode(value: &Value) -> String {
    let mut out = String::new();
    append(&mut out, value, PythonFormatter::new(false));
    out
}

/// Encodes `value` with `formatter` (e.g. [`PythonFormatter::compact`]).
#[must_use]
pub fn to_json_with(value: &Value, formatter: PythonFormatter) -> String {
    let mut out = String::new();
    append(&mut out, value, formatter);
    out
}

/// Serializes `value` onto the end of `out` with `formatter`.
fn append(out: &mut String, value: &Value, formatter: PythonFormatter) {
    // The serializer needs an `io::Write`; a `String`'s bytes are one (moved out and back, so no
    // copy and the capacity is kept).
    let mut buf = std::mem::take(out).into_bytes();
    let mut ser = Serializer::with_formatter(&mut buf, formatter);
    // Cannot fail: writes into a `Vec` do not, and a `Value` has only string keys and finite
    // numbers, the only things `serde_json` could refuse.
    let _ = value.serialize(&mut ser);
    // Safe code has no unchecked conversion; the check is one fast pass over the bytes, which are
    // valid UTF-8 anyway (the formatter writes only whole `str` fragments and ASCII).
    *out = String::from_utf8(buf)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
}

/// A [`serde_json::ser::Formatter`] writing Python's `json.dumps` bytes (see the [module
/// docs](self) for the rules), for any `Serialize` value and any `io::Write`.
///
/// ```
/// use agent_sessions::json::PythonFormatter;
/// use serde::Serialize;
/// use serde_json::{json, Serializer};
///
/// let mut out = Vec::new();
/// let mut ser = Serializer::with_formatter(&mut out, PythonFormatter::new(false));
/// json!({"city": "Zürich", "temp": 1e-7}).serialize(&mut ser).unwrap();
/// assert_eq!(String::from_utf8(out).unwrap(), r#"{"city": "Zürich", "temp": 1e-07}"#);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PythonFormatter {
    ensure_ascii: bool,
    compact: bool,
}

impl PythonFormatter {
    /// The formatter of `json.dumps(obj, ensure_ascii=ensure_ascii)`.
    ///
    /// ```
    /// use agent_sessions::json::PythonFormatter;
    ///
    /// assert_eq!(PythonFormatter::new(true), PythonFormatter::default());
    /// assert!(!PythonFormatter::new(false).ensure_ascii());
    /// ```
    #[must_use]
    pub const fn new(ensure_ascii: bool) -> Self {
        PythonFormatter {
            ensure_ascii,
            compact: false,
        }
    }

    /// The formatter of `json.dumps(obj, ensure_ascii=ensure_ascii, separators=(",", ":"))`,
    /// what the SDK's `SQLAlchemySession` stores.
    ///
    /// ```
    /// use agent_sessions::json::{to_json_with, PythonFormatter};
    /// use serde_json::json;
    ///
    /// let v = json!({"role": "user", "content": "h\u{e9}llo", "n": [1, 2.5]});
    /// assert_eq!(
    ///     to_json_with(&v, PythonFormatter::compact(true)),
    ///     r#"{"role":"user","content":"h\u00e9llo","n":[1,2.5]}"#
    /// );
    /// ```
    #[must_use]
    pub const fn compact(ensure_ascii: bool) -> Self {
        PythonFormatter {
            ensure_ascii,
            compact: true,
        }
    }

    /// Whether characters from DEL `0x7f` up are written as `\uXXXX` escapes.
    ///
    /// ```
    /// use agent_sessions::json::PythonFormatter;
    ///
    /// assert!(PythonFormatter::default().ensure_ascii());
    /// ```
    #[must_use]
    pub const fn ensure_ascii(&self) -> bool {
        self.ensure_ascii
    }
}

impl Default for PythonFormatter {
    /// `json.dumps`'s default, `ensure_ascii=True`.
    fn default() -> Self {
        PythonFormatter::new(true)
    }
}

impl Formatter for PythonFormatter {
    fn begin_array_value<W>(&mut self, writer: &mut W, first: bool) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        if first {
            Ok(())
        } else {
            writer.write_all(if self.compact { b"," } else { b", " })
        }
    }

    fn begin_object_key<W>(&mut self, writer: &mut W, first: bool) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        if first {
            Ok(())
        } else {
            writer.write_all(if self.compact { b"," } else { b", " })
        }
    }

    fn begin_object_value<W>(&mut self, writer: &mut W) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        writer.write_all(if self.compact { b":" } else { b": " })
    }

    fn write_f64<W>(&mut self, writer: &mut W, value: f64) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        writer.write_all(FloatRepr::of(value).bytes())
    }

    fn write_f32<W>(&mut self, writer: &mut W, value: f32) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        // Python has only doubles: an f32 arrives there as the double of the same value.
        self.write_f64(writer, f64::from(value))
    }

    // `#[inline]` (not more): inlined into `serde_json`'s string loop, the common case costs one
    // word-wise scan; forcing it everywhere made the loop slower in measurements.
    #[inline]
    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        // `serde_json` has already split off `"`, `\` and the control characters below 0x20
        // (they come through `write_char_escape`); what is left is written as is, except, with
        // `ensure_ascii`, DEL and non-ASCII characters.
        if self.ensure_ascii && needs_ascii_escape(fragment.as_bytes()) {
            return write_ascii_escaped(writer, fragment);
        }
        writer.write_all(fragment.as_bytes())
    }

    #[inline]
    fn write_char_escape<W>(&mut self, writer: &mut W, char_escape: CharEscape) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        let letter = match char_escape {
            CharEscape::Quote => b'"',
            CharEscape::ReverseSolidus => b'\\',
            // Python never escapes `/` (and `serde_json` never asks to).
            CharEscape::Solidus => return writer.write_all(b"/"),
            CharEscape::Backspace => b'b',
            CharEscape::FormFeed => b'f',
            CharEscape::LineFeed => b'n',
            CharEscape::CarriageReturn => b'r',
            CharEscape::Tab => b't',
            CharEscape::AsciiControl(byte) => return writer.write_all(&u_escape(u16::from(byte))),
        };
        // A fixed-size write: a plain store rather than a `memcpy` call.
        writer.write_all(&[b'\\', letter])
    }
}

// ---------------------------------------------------------------------------------------------
// Strings
// ---------------------------------------------------------------------------------------------

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Eight bytes of UTF-8 plus one in each byte, so that `& HIGH` marks exactly the bytes that
/// are DEL (0x7f) or part of a non-ASCII character (0x80..=0xfe): no byte carries into the next
/// (only 0xff would, and UTF-8 never holds it).
#[inline]
fn marked(chunk: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(chunk);
    u64::from_le_bytes(w).wrapping_add(ONES)
}

/// Whether `bytes` (UTF-8) hold DEL or a non-ASCII character, which `ensure_ascii` escapes.
#[inline]
fn needs_ascii_escape(bytes: &[u8]) -> bool {
    // Word-wise and branch-free: short fragments (most keys) cost a few instructions, long ones
    // vectorize. A byte-at-a-time scan here made short items measurably slower.
    let n = bytes.len();
    if n < 8 {
        if n < 4 {
            return bytes.iter().any(|&b| b >= 0x7f);
        }
        // Two four-byte words, overlapping when `n` < 8.
        let half = |chunk: &[u8]| {
            let mut w = [0u8; 4];
            w.copy_from_slice(chunk);
            u32::from_le_bytes(w).wrapping_add(ONES as u32)
        };
        return (half(&bytes[..4]) | half(&bytes[n - 4..])) & HIGH as u32 != 0;
    }
    // The last word overlaps the one before it when `n` is not a multiple of 8.
    let all = bytes
        .chunks_exact(8)
        .fold(marked(&bytes[n - 8..]), |acc, c| acc | marked(c));
    all & HIGH != 0
}

/// The `ensure_ascii` form of a fragment holding DEL or non-ASCII characters: those as
/// `\uXXXX` (a surrogate pair above the BMP), the rest as is.
// Out of line, so that the inlined fast path stays small.
#[cold]
#[inline(never)]
fn write_ascii_escaped<W>(writer: &mut W, fragment: &str) -> io::Result<()>
where
    W: ?Sized + io::Write,
{
    let bytes = fragment.as_bytes();
    let (mut start, mut i) = (0, 0);
    loop {
        // A run of plain ASCII, written whole: whole words first (text with an accent here and
        // there is mostly long runs), then bytes. It ends at the first byte of a character from
        // DEL up, so `start` and `i` are char boundaries.
        while bytes.get(i..i + 8).is_some_and(|w| marked(w) & HIGH == 0) {
            i += 8;
        }
        while bytes.get(i).is_some_and(|&b| b < 0x7f) {
            i += 1;
        }
        if start < i {
            writer.write_all(&bytes[start..i])?;
        }
        let Some(ch) = fragment.get(i..).and_then(|rest| rest.chars().next()) else {
            return Ok(());
        };
        let mut units = [0u16; 2];
        match *ch.encode_utf16(&mut units) {
            [unit] => writer.write_all(&u_escape(unit))?,
            [high, low] => {
                let mut pair = [0u8; 12];
                pair[..6].copy_from_slice(&u_escape(high));
                pair[6..].copy_from_slice(&u_escape(low));
                writer.write_all(&pair)?;
            }
            _ => {}
        }
        i += ch.len_utf8();
        start = i;
    }
}

/// `\uXXXX` (lowercase hex, as Python writes it) for one UTF-16 code unit.
fn u_escape(unit: u16) -> [u8; 6] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let nibble = |shift: u16| HEX[usize::from((unit >> shift) & 0xf)];
    [b'\\', b'u', nibble(12), nibble(8), nibble(4), nibble(0)]
}

// ---------------------------------------------------------------------------------------------
// Floats
// ---------------------------------------------------------------------------------------------

/// Python's `repr(float)` of one value, in a stack buffer (24 bytes at most, as in
/// `-2.2250738585072014e-308`).
struct FloatRepr {
    buf: [u8; 32],
    len: usize,
}

impl FloatRepr {
    fn of(f: f64) -> FloatRepr {
        let mut out = FloatRepr {
            buf: [0; 32],
            len: 0,
        };
        out.write(f);
        out
    }

    fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    fn push(&mut self, bytes: &[u8]) {
        // The buffer is larger than any repr; were it not, the text would be cut, not panic.
        let end = self.len + bytes.len();
        if let Some(dst) = self.buf.get_mut(self.len..end) {
            dst.copy_from_slice(bytes);
            self.len = end;
        }
    }

    fn write(&mut self, f: f64) {
        if !f.is_finite() {
            // A `Value` cannot hold these and `serde_json` writes them as `null` without asking
            // the formatter; a direct caller gets Python's (non-JSON) spelling.
            return self.push(if f.is_nan() {
                b"NaN"
            } else if f > 0.0 {
                b"Infinity"
            } else {
                b"-Infinity"
            });
        }
        if f.is_sign_negative() {
            self.push(b"-");
        }
        let dec = Decimal::shortest(f.abs());
        let digits = dec.digits();
        if digits.is_empty() {
            return self.push(b"0.0");
        }
        // value = 0.DIGITS x 10^decpt; Python uses fixed notation for
        // -4 < decpt <= 16 and scientific otherwise.
        let decpt = dec.decpt;
        if -4 < decpt && decpt <= 16 {
            if decpt <= 0 {
                self.push(b"0.");
                for _ in 0..-decpt {
                    self.push(b"0");
                }
                self.push(digits);
            } else {
                let point = decpt.unsigned_abs() as usize;
                if point < digits.len() {
                    let (int_part, frac_part) = digits.split_at(point);
                    self.push(int_part);
                    self.push(b".");
                    self.push(frac_part);
                } else {
                    self.push(digits);
                    for _ in digits.len()..point {
                        self.push(b"0");
                    }
                    self.push(b".0");
                }
            }
        } else {
            let (first, rest) = digits.split_at(1);
            self.push(first);
            if !rest.is_empty() {
                self.push(b".");
                self.push(rest);
            }
            // d.ddd x 10^exp; Python writes the exponent signed, with at least two digits.
            let exp = decpt - 1;
            self.push(if exp < 0 { b"e-" } else { b"e+" });
            let e = exp.unsigned_abs();
            if e >= 100 {
                self.push(&[b'0' + (e / 100 % 10) as u8]);
            }
            self.push(&[b'0' + (e / 10 % 10) as u8, b'0' + (e % 10) as u8]);
        }
    }
}

/// A non-negative decimal `0.DIGITS × 10^decpt`, with no leading or trailing zero digit (zero
/// has no digits).
struct Decimal {
    digits: [u8; 32],
    len: usize,
    decpt: i32,
}

impl Decimal {
    /// The shortest round-trip digits of `f` (finite, non-negative), as Python's `repr` (David
    /// Gay's dtoa, mode 0) picks them: the fewest digits that read back as `f`, the candidate
    /// closest to `f` among equally short ones, and an exact tie between two broken to the even
    /// digit (594751044993643.25 → `...643.2`).
    fn shortest(f: f64) -> Decimal {
        // `serde_json`'s own float writer (Ryū) makes exactly that choice, ties included, several
        // times faster than `core::fmt`'s `{:e}` (which, besides, rounds exact ties up); only its
        // layout differs from Python's, and `parse` reads any layout. (Checked against CPython
        // on 1.7 million values: random bit patterns, short decimals, powers of 2 and 10 and
        // their neighbours, exact binary ties, subnormals.)
        let mut text = [0u8; 32];
        let mut rest: &mut [u8] = &mut text;
        let written = match serde_json::ser::CompactFormatter.write_f64(&mut rest, f) {
            Ok(()) => 32 - rest.len(),
            Err(_) => 0,
        };
        Decimal::parse(text.get(..written).unwrap_or(&[]))
    }

    /// Reads plain decimal text in any layout (`"0.0001"`, `"123.45"`, `"1e16"`, `"1.5e-7"`,
    /// `"100.0"`).
    fn parse(text: &[u8]) -> Decimal {
        let mut d = Decimal {
            digits: [0; 32],
            len: 0,
            decpt: 0,
        };
        let e_pos = text
            .iter()
            .position(|&b| b == b'e' || b == b'E')
            .unwrap_or(text.len());
        let (mantissa, exp_part) = text.split_at(e_pos);
        let mut after_point = false;
        for &b in mantissa {
            match b {
                b'.' => after_point = true,
                // A leading zero only moves the point, and only when it follows it.
                b'0' if d.len == 0 => d.decpt -= i32::from(after_point),
                b'0'..=b'9' => {
                    // 17 significant digits at most, plus zeros that are stripped below.
                    if let Some(slot) = d.digits.get_mut(d.len) {
                        *slot = b;
                        d.len += 1;
                    }
                    d.decpt += i32::from(!after_point);
                }
                _ => {}
            }
        }
        let (mut exp, mut neg) = (0i32, false);
        for &b in exp_part {
            match b {
                b'-' => neg = true,
                b'0'..=b'9' => exp = exp.saturating_mul(10).saturating_add(i32::from(b - b'0')),
                _ => {}
            }
        }
        d.decpt = d.decpt.saturating_add(if neg { -exp } else { exp });
        while d.len > 0 && d.digits[d.len - 1] == b'0' {
            d.len -= 1;
        }
        d
    }

    fn digits(&self) -> &[u8] {
        self.digits.get(..self.len).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn enc(v: &Value) -> String {
        to_python_json(v)
    }

    fn float(f: f64) -> String {
        enc(&json!(f))
    }

    #[test]
    fn scalars_and_empty_containers() {
        // python3 -c 'import json; print(json.dumps([None, True, False, [], {}, "", 0, -7]))'
        assert_eq!(
            enc(&json!([null, true, false, [], {}, "", 0, -7])),
            r#"[null, true, false, [], {}, "", 0, -7]"#
        );
        assert_eq!(enc(&json!([])), "[]");
        assert_eq!(enc(&json!({})), "{}");
        assert_eq!(enc(&json!(null)), "null");
    }

    #[test]
    fn nested_objects_keep_key_order() {
        let v: Value = serde_json::from_str(
            r#"{"zeta": 1, "alpha": {"y": [1, {"b": 2, "a": []}], "x": {}}, "mid": "v"}"#,
        )
        .unwrap();
        // json.dumps({"zeta": 1, "alpha": {"y": [1, {"b": 2, "a": []}], "x": {}}, "mid": "v"})
        assert_eq!(
            enc(&v),
            r#"{"zeta": 1, "alpha": {"y": [1, {"b": 2, "a": []}], "x": {}}, "mid": "v"}"#
        );
    }

    #[test]
    fn unicode_escapes() {
        // json.dumps("é中😀")
        assert_eq!(enc(&json!("é中😀")), r#""\u00e9\u4e2d\ud83d\ude00""#);
        // json.dumps({"clé": "naïve ☃ \U0010ffff \uffff"})
        assert_eq!(
            enc(&json!({"clé": "naïve ☃ \u{10ffff} \u{ffff}"})),
            r#"{"cl\u00e9": "na\u00efve \u2603 \udbff\udfff \uffff"}"#
        );
        // json.dumps("a\x7fb\x80c") -- DEL is escaped too
        assert_eq!(enc(&json!("a\x7fb\u{80}c")), r#""a\u007fb\u0080c""#);
    }

    #[test]
    fn control_chars_quotes_backslashes() {
        // json.dumps("\x00\x01\x08\t\n\x0b\x0c\r\x1f \"q\" \\ / ~")
        assert_eq!(
            enc(&json!("\x00\x01\x08\t\n\x0b\x0c\r\x1f \"q\" \\ / ~")),
            r#""\u0000\u0001\b\t\n\u000b\f\r\u001f \"q\" \\ / ~""#
        );
        // json.dumps({"k\"e\\y\n": "x"})
        assert_eq!(enc(&json!({"k\"e\\y\n": "x"})), r#"{"k\"e\\y\n": "x"}"#);
    }

    #[test]
    fn floats_match_python_repr() {
        // Each expected literal is print(json.dumps(<float literal>)) from python3.
        assert_eq!(float(0.1), "0.1");
        assert_eq!(float(1.0), "1.0");
        assert_eq!(float(-0.0), "-0.0");
        assert_eq!(float(0.0), "0.0");
        assert_eq!(float(1e16), "1e+16");
        assert_eq!(float(1e15), "1000000000000000.0");
        assert_eq!(float(1e-5), "1e-05");
        assert_eq!(float(0.0001), "0.0001");
        assert_eq!(float(1.5e300), "1.5e+300");
        assert_eq!(float(5e-324), "5e-324");
        assert_eq!(float(123456789.123), "123456789.123");
        assert_eq!(float(2.5), "2.5");
        assert_eq!(float(1e22), "1e+22");
        assert_eq!(float(100.0), "100.0");
        assert_eq!(float(-1.5), "-1.5");
        assert_eq!(float(123456789012345.6), "123456789012345.6");
        assert_eq!(float(1.7976931348623157e308), "1.7976931348623157e+308");
        assert_eq!(float(-2.2250738585072014e-308), "-2.2250738585072014e-308");
        assert_eq!(float(1.2345e-5), "1.2345e-05");
        assert_eq!(float(0.00012345), "0.00012345");
        assert_eq!(float(1234567890123456.7), "1234567890123456.8");
        assert_eq!(float(12345678901234567.0), "1.2345678901234568e+16");
        assert_eq!(float(1e100), "1e+100");
        // Exact ties between two shortest candidates go to the even digit.
        // (Written as sums so the exact binary values are visible.)
        assert_eq!(float(594751044993643.0 + 0.25), "594751044993643.2");
        assert_eq!(float(76273676417083.0 + 0.125), "76273676417083.12");
        assert_eq!(float(-(605356928956692.0 + 0.25)), "-605356928956692.2");
    }

    #[test]
    fn large_ints() {
        // json.dumps([18446744073709551615, -9223372036854775808, 9223372036854775807])
        assert_eq!(
            enc(&json!([u64::MAX, i64::MIN, i64::MAX])),
            "[18446744073709551615, -9223372036854775808, 9223372036854775807]"
        );
    }

    #[test]
    fn parsed_floats_stay_floats() {
        let v: Value = serde_json::from_str("[1.0, 1e2, -0.0, 3, 0.5e-10]").unwrap();
        // json.dumps(json.loads("[1.0, 1e2, -0.0, 3, 0.5e-10]"))
        assert_eq!(enc(&v), "[1.0, 100.0, -0.0, 3, 5e-11]");
    }

    #[test]
    fn unicode_form_is_ensure_ascii_false() {
        let u = |v: &Value| to_python_json_unicode(v);
        // json.dumps({"clé": "é中😀 \x7f\x80 \U0010ffff"}, ensure_ascii=False)
        assert_eq!(
            u(&json!({"clé": "é中😀 \u{7f}\u{80} \u{10ffff}"})),
            "{\"clé\": \"é中😀 \u{7f}\u{80} \u{10ffff}\"}"
        );
        // Control characters, quotes and backslashes are escaped as with ensure_ascii=True:
        // json.dumps("\x00\x1f\x08\t\n\x0c\r \"q\" \\ / ☃", ensure_ascii=False)
        assert_eq!(
            u(&json!("\x00\x1f\x08\t\n\x0c\r \"q\" \\ / ☃")),
            r#""\u0000\u001f\b\t\n\f\r \"q\" \\ / ☃""#
        );
        assert_eq!(u(&json!([1.5e300, -0.0, {}])), "[1.5e+300, -0.0, {}]");
    }

    #[test]
    fn escapes_at_every_position_of_a_word() {
        // The word-wise scan must find an escape wherever it sits, in fragments of every length
        // (shorter than, equal to and longer than the 4- and 8-byte words).
        for len in 0..40 {
            for at in 0..len {
                for (ch, esc) in [
                    ('\u{7f}', "\\u007f"),
                    ('é', "\\u00e9"),
                    ('😀', "\\ud83d\\ude00"),
                ] {
                    let text: String = (0..len).map(|i| if i == at { ch } else { 'a' }).collect();
                    let want = format!("\"{}{esc}{}\"", "a".repeat(at), "a".repeat(len - at - 1));
                    assert_eq!(enc(&json!(text)), want, "len {len}, escape at {at}");
                }
            }
            assert_eq!(
                enc(&json!("a".repeat(len))),
                format!("\"{}\"", "a".repeat(len))
            );
        }
    }

    #[test]
    fn the_formatter_serves_any_serialize_type() {
        use serde::Serialize;
        use std::collections::BTreeMap;
        fn dumps<T: Serialize>(value: T) -> String {
            let mut out = Vec::new();
            value
                .serialize(&mut Serializer::with_formatter(
                    &mut out,
                    PythonFormatter::default(),
                ))
                .unwrap();
            String::from_utf8(out).unwrap()
        }
        // json.dumps({1: [0.5, None], 2: []}): integer keys become strings.
        let map: BTreeMap<i32, Vec<Option<f64>>> =
            BTreeMap::from([(1, vec![Some(0.5), None]), (2, vec![])]);
        assert_eq!(dumps(map), r#"{"1": [0.5, null], "2": []}"#);
        // An f32 is the double of the same value, as Python would hold it:
        // json.dumps(struct.unpack("f", struct.pack("f", 0.1))[0])
        assert_eq!(dumps(0.1f32), "0.10000000149011612");
        assert_eq!(
            dumps(("é", 'x', u128::MAX)),
            r#"["\u00e9", "x", 340282366920938463463374607431768211455]"#
        );
        // Non-finite floats: serde_json writes null without asking the formatter; asked
        // directly, the formatter spells them as Python does.
        assert_eq!(dumps(f64::NAN), "null");
        for (f, text) in [
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
        ] {
            let mut out = Vec::new();
            PythonFormatter::default().write_f64(&mut out, f).unwrap();
            assert_eq!(out, text.as_bytes());
        }
    }

    #[test]
    fn floats_round_trip_with_the_fewest_digits() {
        // A sweep over bit patterns (xorshift, fixed seed): the text reads back as the same
        // double and has no more significant digits than `core`'s shortest form. The exact
        // choice among those is pinned by `floats_match_python_repr`.
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let f = f64::from_bits(x);
            if !f.is_finite() {
                continue;
            }
            let text = float(f);
            assert_eq!(
                text.parse::<f64>().unwrap().to_bits(),
                f.to_bits(),
                "{text}"
            );
            let count = |t: &str| {
                let m = t.split('e').next().unwrap_or("");
                m.trim_start_matches(['-', '0', '.'])
                    .trim_end_matches(['0', '.'])
                    .replace('.', "")
                    .len()
            };
            assert!(count(&text) <= count(&format!("{f:e}")), "{text} vs {f:e}");
        }
    }

    #[test]
    fn write_appends() {
        let mut s = String::from("x=");
        write_python_json(&mut s, &json!({"a": [1, 2.5]}));
        assert_eq!(s, r#"x={"a": [1, 2.5]}"#);
    }
    /// Encoder throughput on representative items (the hot write path). Run with
    /// `cargo test --release -p agent-sessions --lib json::tests::encoder_speed -- --ignored
    /// --nocapture`.
    #[test]
    #[ignore = "timing only; run in release by hand"]
    fn encoder_speed() {
        let long = "The quick brown fox jumps over the lazy dog; ".repeat(20);
        let items = vec![
            json!({"role": "user", "content": long}),
            json!({"role": "assistant", "content": [{"type": "output_text", "text": long,
                   "annotations": []}], "id": "msg_0123456789abcdef", "status": "completed"}),
            json!({"type": "function_call", "name": "get_weather", "call_id": "call_42",
                   "arguments": "{\"city\": \"Paris\", \"units\": \"metric\"}"}),
            json!({"role": "user", "content": "Grüße aus München — 東京 😀 ".repeat(10)}),
            json!({"usage": {"requests": 3, "input_tokens": 1234, "output_tokens": 567,
                   "ratio": 0.4595, "cost": 1.25e-5, "temps": [0.1, 0.7, 1.0, 36.6]}}),
        ];
        let bytes: usize = items.iter().map(|v| to_python_json(v).len()).sum();
        let rounds = 200_000;
        let mut text = String::new();
        let mut sink = 0usize;
        let t = std::time::Instant::now();
        for _ in 0..rounds {
            for v in &items {
                text.clear();
                write_python_json(&mut text, v);
                sink += text.len();
            }
        }
        let el = t.elapsed();
        assert_eq!(sink, bytes * rounds);
        for v in &items {
            let t = std::time::Instant::now();
            for _ in 0..rounds {
                text.clear();
                write_python_json(&mut text, v);
            }
            let per = t.elapsed().as_nanos() as f64 / rounds as f64;
            println!("  {:5} bytes: {per:.0} ns", text.len());
        }
        let n = (rounds * items.len()) as f64;
        println!(
            "encoder: {:.0} ns/item, {:.0} MB/s ({} items of {} bytes in total)",
            el.as_nanos() as f64 / n,
            (bytes * rounds) as f64 / el.as_secs_f64() / 1e6,
            items.len(),
            bytes
        );
    }
}
