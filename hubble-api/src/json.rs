//! Fast number decoding for the generated serde impls: protojson allows a number or a
//! string for every numeric field. pbjson's own helper buffers each value and builds an
//! error before trying the number case; this one dispatches on the token directly.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A protobuf numeric field in JSON: `123` or `"123"` (and floats, `"NaN"`, `"Infinity"`).
pub struct NumberDeserialize<T>(pub T);

/// Numeric types that appear in the generated code.
pub trait JsonNumber: Sized + std::str::FromStr {
    fn from_u64(v: u64) -> Option<Self>;
    fn from_i64(v: i64) -> Option<Self>;
    fn from_f64(v: f64) -> Option<Self>;
}

macro_rules! int_number {
    ($($t:ty),*) => {$(
        impl JsonNumber for $t {
            fn from_u64(v: u64) -> Option<Self> { <$t>::try_from(v).ok() }
            fn from_i64(v: i64) -> Option<Self> { <$t>::try_from(v).ok() }
            fn from_f64(v: f64) -> Option<Self> {
                // protojson accepts integral floats such as 1e3 for integer fields.
                (v.fract() == 0.0 && v >= <$t>::MIN as f64 && v <= <$t>::MAX as f64).then(|| v as $t)
            }
        }
    )*};
}
int_number!(u32, i32, u64, i64);

impl JsonNumber for f64 {
    fn from_u64(v: u64) -> Option<Self> {
        Some(v as f64)
    }
    fn from_i64(v: i64) -> Option<Self> {
        Some(v as f64)
    }
    fn from_f64(v: f64) -> Option<Self> {
        Some(v)
    }
}

impl JsonNumber for f32 {
    fn from_u64(v: u64) -> Option<Self> {
        Some(v as f32)
    }
    fn from_i64(v: i64) -> Option<Self> {
        Some(v as f32)
    }
    fn from_f64(v: f64) -> Option<Self> {
        Some(v as f32)
    }
}

struct NumberVisitor<T>(PhantomData<T>);

impl<'de, T: JsonNumber> Visitor<'de> for NumberVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or a string holding a number")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::from_u64(v).ok_or_else(|| E::custom(format!("number {v} out of range")))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::from_i64(v).ok_or_else(|| E::custom(format!("number {v} out of range")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        T::from_f64(v).ok_or_else(|| E::custom(format!("number {v} is not valid here")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse()
            .map_err(|_| E::custom(format!("invalid number string {v:?}")))
    }
}

impl<'de, T: JsonNumber> Deserialize<'de> for NumberDeserialize<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumberVisitor(PhantomData)).map(NumberDeserialize)
    }
}

#[cfg(test)]
mod tests {
    use super::NumberDeserialize;

    fn n<T: super::JsonNumber>(s: &str) -> Result<T, serde_json::Error> {
        serde_json::from_str::<NumberDeserialize<T>>(s).map(|v| v.0)
    }

    #[test]
    fn numbers_and_strings() {
        assert_eq!(n::<u32>("443").unwrap(), 443);
        assert_eq!(n::<u32>("\"443\"").unwrap(), 443);
        assert_eq!(n::<u64>("\"18446744073709551615\"").unwrap(), u64::MAX);
        assert_eq!(n::<i32>("-5").unwrap(), -5);
        assert_eq!(n::<i64>("\"-5\"").unwrap(), -5);
        assert_eq!(n::<u32>("1e3").unwrap(), 1000);
        assert_eq!(n::<f64>("1.5").unwrap(), 1.5);
        assert!(n::<u32>("-1").is_err());
        assert!(n::<u32>("4294967296").is_err());
        assert!(n::<u32>("\"abc\"").is_err());
        assert!(n::<u32>("1.5").is_err());
        assert!(n::<u32>("true").is_err());
    }
}
