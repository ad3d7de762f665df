//! A lean JSON front end for the generated serde impls, for the hot path of reading flow
//! files. It accepts a subset of what serde_json accepts and, for what it accepts, hands
//! the visitors exactly what serde_json would: [`from_str`] returns `None` for anything it
//! does not take on (floats, integers past 64 bits, `-0`, lone surrogates, deep nesting,
//! invalid JSON, a visitor's own error) and the caller then parses the line with serde_json,
//! which gives the value or the error message users see. The gain over serde_json: strings
//! are found eight bytes at a time and handed over borrowed, skipped values (parse masks)
//! are scanned without building anything, and nothing builds an error for a line that
//! turns out fine.

use std::fmt;

use serde::de::{self, DeserializeSeed, Visitor};
use serde::forward_to_deserialize_any;

/// Parses `s` as one JSON document into `T`; `None` when serde_json must decide.
pub fn from_str<'de, T: de::Deserialize<'de>>(s: &'de str) -> Option<T> {
    let mut de = De {
        s,
        b: s.as_bytes(),
        i: 0,
        depth: 0,
        scratch: String::new(),
    };
    let v = T::deserialize(&mut de).ok()?;
    de.ws();
    (de.i == de.b.len()).then_some(v)
}

/// serde_json's nesting limit: deeper documents go to serde_json, which refuses them.
const MAX_DEPTH: u32 = 128;

/// Nothing to say: serde_json re-parses the line and words the error.
#[derive(Debug)]
pub struct Declined;

impl fmt::Display for Declined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("declined")
    }
}

impl std::error::Error for Declined {}

impl de::Error for Declined {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Declined
    }
}

type Result<T> = std::result::Result<T, Declined>;

struct De<'de> {
    s: &'de str,
    b: &'de [u8],
    i: usize,
    depth: u32,
    /// Unescaped text of the current string when it holds escapes.
    scratch: String,
}

/// A string as parsed: a slice of the input, or unescaped text in `De::scratch`.
enum Str<'de> {
    Borrowed(&'de str),
    Scratch,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Bit 7 of each byte of the result is set where that byte of `v` is zero (exact for the
/// lowest such byte, which is all we look at).
#[inline(always)]
fn zero_bytes(v: u64) -> u64 {
    v.wrapping_sub(ONES) & !v & HIGH
}

impl<'de> De<'de> {
    #[inline(always)]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if !matches!(c, b' ' | b'\n' | b'\t' | b'\r') {
                break;
            }
            self.i += 1;
        }
    }

    /// The next non-blank byte, not consumed.
    #[inline(always)]
    fn peek(&mut self) -> Result<u8> {
        self.ws();
        self.b.get(self.i).copied().ok_or(Declined)
    }

    #[inline(always)]
    fn expect(&mut self, c: u8) -> Result<()> {
        if self.peek()? == c {
            self.i += 1;
            Ok(())
        } else {
            Err(Declined)
        }
    }

    /// Advances to the first `"`, `\` or control character at or after `self.i`.
    #[inline(always)]
    fn scan_plain(&mut self) {
        let b = self.b;
        let mut i = self.i;
        // 16 bytes at a time with SSE2 (part of every x86_64), else 8 with SWAR; the input
        // past the string's end is scanned too, so only a line's last bytes go one by one.
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SSE2 is part of the x86_64 baseline; every load is of 16 bytes inside
        // `b` (i + 16 <= b.len()) and has no alignment requirement.
        unsafe {
            use std::arch::x86_64::*;
            let quote = _mm_set1_epi8(b'"' as i8);
            let backslash = _mm_set1_epi8(b'\\' as i8);
            let below_space = _mm_set1_epi8(0x1f);
            while i + 16 <= b.len() {
                let v = _mm_loadu_si128(b.as_ptr().add(i).cast());
                let hits = _mm_or_si128(
                    _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                    // v <= 0x1f (unsigned) exactly when max(v, 0x1f) == 0x1f.
                    _mm_cmpeq_epi8(_mm_max_epu8(v, below_space), below_space),
                );
                let mask = _mm_movemask_epi8(hits) as u32;
                if mask != 0 {
                    self.i = i + mask.trailing_zeros() as usize;
                    return;
                }
                i += 16;
            }
        }
        while i + 8 <= b.len() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            let v = u64::from_le_bytes(w);
            let hits = zero_bytes(v ^ (ONES * b'"' as u64))
                | zero_bytes(v ^ (ONES * b'\\' as u64))
                | (v.wrapping_sub(ONES * 0x20) & !v & HIGH);
            if hits != 0 {
                self.i = i + (hits.trailing_zeros() / 8) as usize;
                return;
            }
            i += 8;
        }
        while let Some(&c) = b.get(i) {
            if c == b'"' || c == b'\\' || c < 0x20 {
                break;
            }
            i += 1;
        }
        self.i = i;
    }

    /// Parses a string whose opening quote is at `self.i`.
    #[inline]
    fn string(&mut self) -> Result<Str<'de>> {
        self.i += 1;
        let start = self.i;
        self.scan_plain();
        match self.b.get(self.i) {
            Some(b'"') => {
                // SAFETY: `start` follows a `"` and `self.i` is at one; both are ASCII, so
                // both offsets are char boundaries of the valid UTF-8 `self.s`.
                let s = unsafe { self.s.get_unchecked(start..self.i) };
                self.i += 1;
                Ok(Str::Borrowed(s))
            }
            Some(b'\\') => {
                let mut sc = std::mem::take(&mut self.scratch);
                sc.clear();
                let r = self.escaped(start, &mut sc);
                self.scratch = sc;
                r.map(|()| Str::Scratch)
            }
            _ => Err(Declined),
        }
    }

    /// The rest of a string with escapes, from `start`; `self.i` is at a backslash.
    #[cold]
    fn escaped(&mut self, mut start: usize, out: &mut String) -> Result<()> {
        loop {
            out.push_str(self.s.get(start..self.i).ok_or(Declined)?);
            match self.b.get(self.i) {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    let c = *self.b.get(self.i + 1).ok_or(Declined)?;
                    self.i += 2;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = match hi {
                                0xD800..=0xDBFF => {
                                    if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                                        return Err(Declined);
                                    }
                                    self.i += 2;
                                    let lo = self.hex4()?;
                                    if !(0xDC00..=0xDFFF).contains(&lo) {
                                        return Err(Declined);
                                    }
                                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                                }
                                0xDC00..=0xDFFF => return Err(Declined),
                                _ => hi,
                            };
                            out.push(char::from_u32(cp).ok_or(Declined)?);
                        }
                        _ => return Err(Declined),
                    }
                }
                _ => return Err(Declined),
            }
            start = self.i;
            self.scan_plain();
        }
    }

    fn hex4(&mut self) -> Result<u32> {
        let h = self.b.get(self.i..self.i + 4).ok_or(Declined)?;
        let mut v = 0u32;
        for &c in h {
            v = v * 16 + (c as char).to_digit(16).ok_or(Declined)?;
        }
        self.i += 4;
        Ok(v)
    }

    /// Skips a string whose opening quote is at `self.i`, checking it as serde_json does
    /// when it ignores one (escapes must be well formed; any \u code unit is fine).
    fn skip_string(&mut self) -> Result<()> {
        self.i += 1;
        loop {
            self.scan_plain();
            match self.b.get(self.i) {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    let c = *self.b.get(self.i + 1).ok_or(Declined)?;
                    self.i += 2;
                    match c {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            self.hex4()?;
                        }
                        _ => return Err(Declined),
                    }
                }
                _ => return Err(Declined),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        self.i - start
    }

    /// Skips a number with JSON's full grammar.
    fn skip_number(&mut self) -> Result<()> {
        if self.b[self.i] == b'-' {
            self.i += 1;
        }
        match self.b.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Declined),
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(Declined);
            }
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(Declined);
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Result<()> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Declined)
        }
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Declined);
        }
        self.i += 1;
        Ok(())
    }

    /// Skips one value of any kind.
    fn skip_value(&mut self) -> Result<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' => {
                self.enter()?;
                if self.peek()? != b'}' {
                    loop {
                        if self.peek()? != b'"' {
                            return Err(Declined);
                        }
                        self.skip_string()?;
                        self.expect(b':')?;
                        self.skip_value()?;
                        match self.peek()? {
                            b',' => self.i += 1,
                            b'}' => break,
                            _ => return Err(Declined),
                        }
                    }
                }
                self.i += 1;
                self.depth -= 1;
                Ok(())
            }
            b'[' => {
                self.enter()?;
                if self.peek()? != b']' {
                    loop {
                        self.skip_value()?;
                        match self.peek()? {
                            b',' => self.i += 1,
                            b']' => break,
                            _ => return Err(Declined),
                        }
                    }
                }
                self.i += 1;
                self.depth -= 1;
                Ok(())
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.skip_number(),
            _ => Err(Declined),
        }
    }

    /// An integer that fits 64 bits, as serde_json visits it; anything else is declined.
    fn integer<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        let neg = self.b[self.i] == b'-';
        if neg {
            self.i += 1;
        }
        let start = self.i;
        let mut n: u64 = 0;
        while let Some(&c) = self.b.get(self.i) {
            if !c.is_ascii_digit() {
                break;
            }
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add((c - b'0') as u64))
                .ok_or(Declined)?;
            self.i += 1;
        }
        let len = self.i - start;
        // No digits, a leading zero, or a fraction/exponent (floats are serde_json's).
        if len == 0
            || (len > 1 && self.b[start] == b'0')
            || matches!(self.b.get(self.i), Some(b'.' | b'e' | b'E'))
        {
            return Err(Declined);
        }
        if !neg {
            return visitor.visit_u64(n);
        }
        // serde_json reads -0 as a float.
        if n == 0 || n > i64::MAX as u64 + 1 {
            return Err(Declined);
        }
        visitor.visit_i64((n as i64).wrapping_neg())
    }

    fn visit_string<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        match self.string()? {
            Str::Borrowed(s) => visitor.visit_borrowed_str(s),
            Str::Scratch => visitor.visit_str(&self.scratch),
        }
    }
}

impl<'de> de::Deserializer<'de> for &mut De<'de> {
    type Error = Declined;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            b'"' => self.visit_string(visitor),
            b'{' => {
                self.enter()?;
                let v = visitor.visit_map(Entries {
                    de: &mut *self,
                    first: true,
                })?;
                self.expect(b'}')?;
                self.depth -= 1;
                Ok(v)
            }
            b'[' => {
                self.enter()?;
                let v = visitor.visit_seq(Entries {
                    de: &mut *self,
                    first: true,
                })?;
                self.expect(b']')?;
                self.depth -= 1;
                Ok(v)
            }
            b't' => {
                self.literal(b"true")?;
                visitor.visit_bool(true)
            }
            b'f' => {
                self.literal(b"false")?;
                visitor.visit_bool(false)
            }
            b'n' => {
                self.literal(b"null")?;
                visitor.visit_unit()
            }
            b'-' | b'0'..=b'9' => self.integer(visitor),
            _ => Err(Declined),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.skip_value()?;
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    // serde_json has its own rules for these; none of the generated code uses them.
    fn deserialize_bytes<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(Declined)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(Declined)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value> {
        Err(Declined)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

/// The entries of an object or the elements of an array.
struct Entries<'a, 'de> {
    de: &'a mut De<'de>,
    first: bool,
}

impl<'de> de::MapAccess<'de> for Entries<'_, 'de> {
    type Error = Declined;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        let mut c = self.de.peek()?;
        if c == b'}' {
            return Ok(None);
        }
        if !std::mem::take(&mut self.first) {
            if c != b',' {
                return Err(Declined);
            }
            self.de.i += 1;
            c = self.de.peek()?;
        }
        if c != b'"' {
            return Err(Declined);
        }
        let key = seed.deserialize(Key(&mut *self.de))?;
        self.de.expect(b':')?;
        Ok(Some(key))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.de)
    }
}

impl<'de> de::SeqAccess<'de> for Entries<'_, 'de> {
    type Error = Declined;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        let c = self.de.peek()?;
        if c == b']' {
            return Ok(None);
        }
        if !std::mem::take(&mut self.first) {
            if c != b',' {
                return Err(Declined);
            }
            self.de.i += 1;
        }
        seed.deserialize(&mut *self.de).map(Some)
    }
}

/// An object key (always a string: protojson has no map fields in these packages).
struct Key<'a, 'de>(&'a mut De<'de>);

impl<'de> de::Deserializer<'de> for Key<'_, 'de> {
    type Error = Declined;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.0.visit_string(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.0.skip_string()?;
        visitor.visit_unit()
    }

    // serde_json reads numbers and booleans out of keys for these; we leave them to it.
    fn deserialize_bool<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(Declined)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(Declined)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(Declined)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(Declined)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(Declined)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value> {
        Err(Declined)
    }

    forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u32 u128 f32 f64 char str string
        unit unit_struct seq tuple tuple_struct map struct identifier
    }
}
