//! Byte-exact Python `json.dumps` encoding.
//!
//! This module owns the one encoder used to write `message_data`: it turns a
//! [`serde_json::Value`] into exactly the bytes `CPython`'s `json.dumps(obj)`
//! produces with default arguments:
//!
//! * separators `", "` and `": "`, object key order preserved (`serde_json` is
//!   built with `preserve_order`), `[]` / `{}` for empty containers;
//! * `ensure_ascii=True`: every character outside `' '..='~'` is escaped;
//!   `\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f` use short escapes, everything
//!   else (other control characters, DEL `0x7f`, all non-ASCII) is written as
//!   `\uXXXX` with lowercase hex, characters above the BMP as a UTF-16
//!   surrogate pair; `/` is not escaped;
//! * integers as plain decimal digits, floats as Python's `repr(float)`:
//!   shortest round-trip digits, fixed notation when the decimal exponent is
//!   in Python's range (`1.0`, `0.0001`, `1000000000000000.0`, `-0.0`),
//!   scientific otherwise (`1e+16`, `1e-05`, `1.5e+300`).
//!
//! Why it matters: content search runs SQL `LIKE` on these stored bytes, and
//! database files are shared with the Python SDK, so a row written here must
//! be indistinguishable from one written by Python (same escapes, same
//! spacing, same float spelling), or searches and round-trips diverge.
//!
//! The encoder never panics. It recurses once per nesting level; `serde_json`'s
//! parser already caps nesting at 128 levels, which is far below any stack
//! limit, but a `Value` built by hand with extreme depth (tens of thousands of
//! levels) could exhaust the stack.

use std::fmt::{self, Write as _};

use serde_json::{Number, Value};

/// Encodes `value` the way Python's `json.dumps(value)` does.
#[must_use]
pub fn to_python_json(value: &Value) -> String {
    let mut out = String::new();
    write_python_json(&mut out, value);
    out
}

/// Appends the Python `json.dumps` encoding of `value` to `out`.
pub fn write_python_json(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            let mut first = true;
            for item in items {
                if !first {
                    out.push_str(", ");
                }
                first = false;
                write_python_json(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            let mut first = true;
            for (key, item) in map {
                if !first {
                    out.push_str(", ");
                }
                first = false;
                write_str(out, key);
                out.push_str(": ");
                write_python_json(out, item);
            }
            out.push('}');
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `true` for bytes Python writes unchanged with `ensure_ascii=True`.
#[inline]
fn is_plain(b: u8) -> bool {
    (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\'
}

fn push_u_escape(out: &mut String, unit: u32) {
    out.push('\\');
    out.push('u');
    for shift in [12u32, 8, 4, 0] {
        out.push(char::from(HEX[((unit >> shift) & 0xf) as usize]));
    }
}

fn write_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if is_plain(b) {
            i += 1;
            continue;
        }
        // `start` and `i` are both char boundaries: every byte skipped above
        // is ASCII, and non-ASCII chars are consumed whole below.
        out.push_str(&s[start..i]);
        if b < 0x80 {
            match b {
                b'"' => out.push_str("\\\""),
                b'\\' => out.push_str("\\\\"),
                b'\n' => out.push_str("\\n"),
                b'\r' => out.push_str("\\r"),
                b'\t' => out.push_str("\\t"),
                0x08 => out.push_str("\\b"),
                0x0c => out.push_str("\\f"),
                _ => push_u_escape(out, u32::from(b)),
            }
            i += 1;
        } else {
            let Some(ch) = s[i..].chars().next() else {
                // Unreachable (i < len); `s[start..i]` was already written.
                start = i;
                break;
            };
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                push_u_escape(out, u32::from(*unit));
            }
            i += ch.len_utf8();
        }
        start = i;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

fn write_number(out: &mut String, n: &Number) {
    if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(f) = n.as_f64() {
        write_float(out, f);
    } else {
        // Unreachable without `arbitrary_precision`; keep serde_json's text.
        let _ = write!(out, "{n}");
    }
}

/// Fixed-size stack buffer for `{:e}` output (at most ~25 bytes for f64).
struct StackBuf {
    buf: [u8; 48],
    len: usize,
}

impl StackBuf {
    fn new() -> Self {
        StackBuf {
            buf: [0; 48],
            len: 0,
        }
    }

    fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

impl fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Significant digits and decimal exponent of Rust's `{:e}` output
/// (`"1.2345e-5"` → digits `12345`, exp `-5`).
struct Decimal {
    digits: [u8; 32],
    len: usize,
    exp: i32,
}

impl Decimal {
    fn parse(text: &[u8]) -> Decimal {
        let mut d = Decimal {
            digits: [0; 32],
            len: 0,
            exp: 0,
        };
        let e_pos = text.iter().position(|&b| b == b'e').unwrap_or(text.len());
        let (mantissa, exp_part) = text.split_at(e_pos);
        for &b in mantissa {
            if b.is_ascii_digit() && d.len < d.digits.len() {
                d.digits[d.len] = b;
                d.len += 1;
            }
        }
        let mut neg = false;
        for &b in exp_part {
            match b {
                b'-' => neg = true,
                b'0'..=b'9' => {
                    d.exp = d.exp.saturating_mul(10).saturating_add(i32::from(b - b'0'));
                }
                _ => {}
            }
        }
        if neg {
            d.exp = -d.exp;
        }
        d
    }

    fn digits(&self) -> &[u8] {
        self.digits.get(..self.len).unwrap_or(&[])
    }
}

/// Shortest round-trip digits of `f` (finite, non-negative), with ties
/// between two equally short and equally close candidates broken to the
/// even last digit, as Python's `repr` (David Gay's dtoa, mode 0) does.
fn shortest_digits(f: f64) -> Decimal {
    let mut sb = StackBuf::new();
    // Rust's `{:e}` yields the shortest round-trip digits, choosing the one
    // closest to `f`; when `f` lies exactly halfway between two candidates it
    // rounds up (594751044993643.25 → "...643.3"), whereas Python rounds
    // half to even ("...643.2").
    if write!(sb, "{f:e}").is_err() {
        return Decimal::parse(b"0e0");
    }
    let d = Decimal::parse(sb.bytes());
    // Such a tie needs the digit spacing to be below one ulp, which for
    // normal doubles means at least 16 digits (10^-n < 2^-52); subnormals
    // cannot tie since their exact expansions have hundreds of digits. Only
    // an odd last digit can be the wrong pick.
    let n = d.len;
    let odd_last = d.digits().last().is_some_and(|&b| (b - b'0') % 2 == 1);
    if n >= 16 && odd_last {
        // Correctly rounded n-digit value; Rust's exact mode breaks ties to
        // even. If it differs from the shortest pick yet still round-trips,
        // the two were equally close: take the even one, as Python does.
        let mut alt = StackBuf::new();
        if write!(alt, "{:.*e}", n - 1, f).is_ok() && alt.bytes() != sb.bytes() {
            let round_trips = std::str::from_utf8(alt.bytes())
                .ok()
                .and_then(|t| t.parse::<f64>().ok())
                .is_some_and(|back| back.to_bits() == f.to_bits());
            if round_trips {
                return Decimal::parse(alt.bytes());
            }
        }
    }
    d
}

fn push_ascii(out: &mut String, ds: &[u8]) {
    for &d in ds {
        out.push(char::from(d));
    }
}

/// Writes `f` as Python's `repr(float)`.
fn write_float(out: &mut String, f: f64) {
    if !f.is_finite() {
        // serde_json cannot hold these; mirror Python's (non-JSON) output.
        out.push_str(if f.is_nan() {
            "NaN"
        } else if f > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        });
        return;
    }
    if f.is_sign_negative() {
        out.push('-');
    }
    let dec = shortest_digits(f.abs());
    let digits = dec.digits();
    if digits.is_empty() {
        out.push_str("0.0");
        return;
    }
    let exp = dec.exp;
    // value = 0.DIGITS x 10^decpt; Python uses fixed notation for
    // -4 < decpt <= 16 and scientific otherwise.
    let decpt = exp.saturating_add(1);
    if -4 < decpt && decpt <= 16 {
        if decpt <= 0 {
            out.push_str("0.");
            for _ in 0..-decpt {
                out.push('0');
            }
            push_ascii(out, digits);
        } else {
            let point = decpt.unsigned_abs() as usize;
            if point < digits.len() {
                let (int_part, frac_part) = digits.split_at(point);
                push_ascii(out, int_part);
                out.push('.');
                push_ascii(out, frac_part);
            } else {
                push_ascii(out, digits);
                for _ in digits.len()..point {
                    out.push('0');
                }
                out.push_str(".0");
            }
        }
    } else {
        let (first, rest) = digits.split_at(1);
        push_ascii(out, first);
        if !rest.is_empty() {
            out.push('.');
            push_ascii(out, rest);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let _ = write!(out, "{:02}", exp.unsigned_abs());
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
    fn write_appends() {
        let mut s = String::from("x=");
        write_python_json(&mut s, &json!({"a": [1, 2.5]}));
        assert_eq!(s, r#"x={"a": [1, 2.5]}"#);
    }
}
