//! AMF0, the encoding of RTMP command and data messages.
//!
//! Implements the subset of the AMF0 specification (Adobe, 2007) that RTMP publishers use:
//! number, boolean, string, long string, object, null, undefined, ECMA array, strict array,
//! date (§2.2 to §2.14). References, XML and typed objects are refused. Nesting is bounded
//! by [`MAX_DEPTH`]; no length field is trusted before the bytes are there.

use std::fmt;

/// Objects nested deeper than this are refused: real commands nest two levels, and the limit
/// keeps a hostile message from exhausting the stack.
pub const MAX_DEPTH: usize = 16;
/// Values and properties every message may decode to, whatever its length: a `connect` or an
/// `onMetaData` has a few dozen.
pub const MIN_VALUE_BUDGET: usize = 64;
/// Then one more value or property per this many bytes. A decoded value takes 32 bytes and a
/// property 56, so a message never decodes to more than about 7 times its length (plus its
/// strings, at most its length): one byte (`null`) per value would otherwise make 32. Real
/// values take at least 9 bytes (a number) or 4 (a property with a one-letter name).
pub const BYTES_PER_VALUE: usize = 8;

const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const STRICT_ARRAY: u8 = 0x0a;
const DATE: u8 = 0x0b;
const LONG_STRING: u8 = 0x0c;

/// An AMF0 value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// IEEE 754 double.
    Number(f64),
    /// Boolean.
    Boolean(bool),
    /// UTF-8 string (short or long on the wire).
    String(String),
    /// Anonymous object: ordered properties.
    Object(Vec<(String, Self)>),
    /// Null.
    Null,
    /// Undefined.
    Undefined,
    /// Associative array: ordered properties.
    EcmaArray(Vec<(String, Self)>),
    /// Dense array.
    StrictArray(Vec<Self>),
    /// Milliseconds since the epoch (the time zone field is ignored, as the spec says).
    Date(f64),
}

impl Value {
    /// The string inside, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number inside, if this is a number.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Self::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The property `key` of an object or ECMA array.
    pub fn get(&self, key: &str) -> Option<&Self> {
        match self {
            Self::Object(props) | Self::EcmaArray(props) => {
                props.iter().find(|(k, _)| k == key).map(|(_, v)| v)
            }
            _ => None,
        }
    }
}

/// Why AMF0 bytes could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmfError {
    /// The bytes end inside a value.
    #[error("AMF0 value truncated at byte {0}")]
    Truncated(usize),
    /// A type marker this decoder does not accept.
    #[error("AMF0 type marker 0x{marker:02x} at byte {offset} is not supported")]
    UnsupportedMarker {
        /// The marker.
        marker: u8,
        /// Where it was.
        offset: usize,
    },
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("AMF0 nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    /// A string that is not UTF-8.
    #[error("AMF0 string at byte {0} is not UTF-8")]
    NotUtf8(usize),
    /// More values than the message's length allows ([`value_budget`]).
    #[error("AMF0 message of {len} bytes holds more than {budget} values")]
    TooManyValues {
        /// The message's length.
        len: usize,
        /// Its budget.
        budget: usize,
    },
}

/// How many values and properties a message of `len` bytes may decode to.
pub fn value_budget(len: usize) -> usize {
    MIN_VALUE_BUDGET + len / BYTES_PER_VALUE
}

/// Decodes every value in `data`, within its [`value_budget`].
pub fn decode_all(data: &[u8]) -> Result<Vec<Value>, AmfError> {
    let mut decoder = Decoder { data, pos: 0, budget: value_budget(data.len()) };
    let mut values = Vec::new();
    while decoder.pos < data.len() {
        values.push(decoder.value(0)?);
    }
    Ok(values)
}

struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
    /// Values and properties still allowed.
    budget: usize,
}

impl Decoder<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], AmfError> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.data.len());
        let Some(end) = end else {
            return Err(AmfError::Truncated(self.data.len()));
        };
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, AmfError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, AmfError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, AmfError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f64(&mut self) -> Result<f64, AmfError> {
        let b = self.take(8)?;
        let mut raw = [0; 8];
        raw.copy_from_slice(b);
        Ok(f64::from_be_bytes(raw))
    }

    fn string(&mut self, len: usize) -> Result<String, AmfError> {
        let at = self.pos;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| AmfError::NotUtf8(at))
    }

    /// Counts one value or property against the budget.
    fn spend(&mut self) -> Result<(), AmfError> {
        self.budget = self.budget.checked_sub(1).ok_or(AmfError::TooManyValues {
            len: self.data.len(),
            budget: value_budget(self.data.len()),
        })?;
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<Value, AmfError> {
        if depth > MAX_DEPTH {
            return Err(AmfError::TooDeep);
        }
        self.spend()?;
        let offset = self.pos;
        let marker = self.u8()?;
        Ok(match marker {
            NUMBER => Value::Number(self.f64()?),
            BOOLEAN => Value::Boolean(self.u8()? != 0),
            STRING => {
                let len = usize::from(self.u16()?);
                Value::String(self.string(len)?)
            }
            LONG_STRING => {
                let len = self.u32()? as usize;
                Value::String(self.string(len)?)
            }
            OBJECT => Value::Object(self.properties(depth)?),
            NULL => Value::Null,
            UNDEFINED => Value::Undefined,
            ECMA_ARRAY => {
                // The count is a hint only; encoders get it wrong, the end marker decides.
                self.u32()?;
                Value::EcmaArray(self.properties(depth)?)
            }
            STRICT_ARRAY => {
                let count = self.u32()?;
                // Each element takes at least one byte and one unit of the budget: never
                // reserve more than either allows.
                let room = (self.data.len() - self.pos).min(self.budget);
                let mut items = Vec::with_capacity((count as usize).min(room));
                for _ in 0..count {
                    items.push(self.value(depth + 1)?);
                }
                Value::StrictArray(items)
            }
            DATE => {
                let millis = self.f64()?;
                self.u16()?;
                Value::Date(millis)
            }
            marker => return Err(AmfError::UnsupportedMarker { marker, offset }),
        })
    }

    /// Reads `key, value` pairs up to the empty key and object-end marker.
    fn properties(&mut self, depth: usize) -> Result<Vec<(String, Value)>, AmfError> {
        let mut props = Vec::new();
        loop {
            let len = usize::from(self.u16()?);
            if len == 0 {
                // Tolerate a missing end marker at the very end, as Flash-era encoders do.
                if self.pos == self.data.len() {
                    return Ok(props);
                }
                let offset = self.pos;
                let marker = self.u8()?;
                if marker == OBJECT_END {
                    return Ok(props);
                }
                return Err(AmfError::UnsupportedMarker { marker, offset });
            }
            self.spend()?;
            let key = self.string(len)?;
            let value = self.value(depth + 1)?;
            props.push((key, value));
        }
    }
}

/// Appends the encoding of `value` to `out`.
pub fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Number(n) => {
            out.push(NUMBER);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Value::Boolean(b) => out.extend_from_slice(&[BOOLEAN, u8::from(*b)]),
        Value::String(s) => match u16::try_from(s.len()) {
            Ok(len) => {
                out.push(STRING);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            Err(_) => {
                out.push(LONG_STRING);
                out.extend_from_slice(&(s.len() as u32).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        },
        Value::Object(props) => {
            out.push(OBJECT);
            encode_properties(props, out);
        }
        Value::Null => out.push(NULL),
        Value::Undefined => out.push(UNDEFINED),
        Value::EcmaArray(props) => {
            out.push(ECMA_ARRAY);
            out.extend_from_slice(&(props.len() as u32).to_be_bytes());
            encode_properties(props, out);
        }
        Value::StrictArray(items) => {
            out.push(STRICT_ARRAY);
            out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            for item in items {
                encode(item, out);
            }
        }
        Value::Date(millis) => {
            out.push(DATE);
            out.extend_from_slice(&millis.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        }
    }
}

fn encode_properties(props: &[(String, Value)], out: &mut Vec<u8>) {
    for (key, value) in props {
        // Keys are ours (command replies), all short.
        let key = &key.as_bytes()[..key.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(key.len() as u16).to_be_bytes());
        out.extend_from_slice(key);
        encode(value, out);
    }
    out.extend_from_slice(&[0, 0, OBJECT_END]);
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Boolean(b) => write!(f, "{b}"),
            Self::String(s) => write!(f, "{s:?}"),
            Self::Null => f.write_str("null"),
            Self::Undefined => f.write_str("undefined"),
            Self::Date(d) => write!(f, "date({d})"),
            Self::StrictArray(items) => write!(f, "[{} items]", items.len()),
            Self::Object(props) | Self::EcmaArray(props) => write!(f, "{{{} props}}", props.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(props: &[(&str, Value)]) -> Value {
        Value::Object(props.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect())
    }

    /// `connect` as ffmpeg 5.1 sends it for `rtmp://host/live/key` (command object trimmed to
    /// the fields ffmpeg writes for a publisher).
    #[test]
    fn decodes_ffmpeg_connect() {
        let mut bytes = Vec::new();
        encode(&Value::String("connect".into()), &mut bytes);
        encode(&Value::Number(1.0), &mut bytes);
        encode(
            &obj(&[
                ("app", Value::String("live".into())),
                ("type", Value::String("nonprivate".into())),
                ("flashVer", Value::String("FMLE/3.0 (compatible; Lavf59.27.100)".into())),
                ("tcUrl", Value::String("rtmp://127.0.0.1:1935/live".into())),
            ]),
            &mut bytes,
        );
        let values = decode_all(&bytes).unwrap();
        assert_eq!(values[0].as_str(), Some("connect"));
        assert_eq!(values[1].as_number(), Some(1.0));
        assert_eq!(values[2].get("app").and_then(Value::as_str), Some("live"));
        // Known bytes of the head: marker 2, length 7, "connect", marker 0, 1.0.
        assert_eq!(&bytes[..19], b"\x02\x00\x07connect\x00\x3f\xf0\x00\x00\x00\x00\x00\x00");
    }

    /// Counts values and properties, as the budget does.
    fn nodes(value: &Value) -> usize {
        1 + match value {
            Value::Object(props) | Value::EcmaArray(props) => {
                props.iter().map(|(_, v)| 1 + nodes(v)).sum()
            }
            Value::StrictArray(items) => items.iter().map(nodes).sum(),
            _ => 0,
        }
    }

    /// One byte per value (`null`) would decode to 32 bytes per byte sent.
    #[test]
    fn a_flood_of_tiny_values_stops_at_the_budget() {
        for len in [0usize, 1, 64, 65, 1000, 1 << 20] {
            let nulls = vec![NULL; len];
            let result = decode_all(&nulls);
            if len <= value_budget(len) {
                assert_eq!(result.map(|v| v.len()), Ok(len), "{len}");
            } else {
                assert_eq!(result, Err(AmfError::TooManyValues { len, budget: value_budget(len) }));
            }
        }
        // A strict array announcing four billion elements of one byte each.
        let mut array = vec![STRICT_ARRAY, 0xff, 0xff, 0xff, 0xff];
        array.extend(vec![NULL; 10_000]);
        assert!(matches!(decode_all(&array), Err(AmfError::TooManyValues { .. })));
        // An object of one-letter properties of `null`: 4 bytes each.
        let mut object = vec![OBJECT];
        for _ in 0..10_000 {
            object.extend_from_slice(&[0, 1, b'k', NULL]);
        }
        object.extend_from_slice(&[0, 0, OBJECT_END]);
        assert!(matches!(decode_all(&object), Err(AmfError::TooManyValues { .. })));
    }

    /// What real encoders send fits the budget with room to spare: ffmpeg's `onMetaData`.
    #[test]
    fn real_metadata_is_well_within_the_budget() {
        let props = [
            "duration",
            "width",
            "height",
            "videodatarate",
            "framerate",
            "videocodecid",
            "audiodatarate",
            "audiosamplerate",
            "audiosamplesize",
            "stereo",
            "audiocodecid",
            "filesize",
        ];
        let mut bytes = Vec::new();
        encode(&Value::String("@setDataFrame".into()), &mut bytes);
        encode(&Value::String("onMetaData".into()), &mut bytes);
        let array = props.iter().map(|k| ((*k).to_owned(), Value::Number(1.0))).collect();
        encode(&Value::EcmaArray(array), &mut bytes);
        let values = decode_all(&bytes).unwrap();
        let used: usize = values.iter().map(nodes).sum();
        assert!(used * 2 < value_budget(bytes.len()), "{used} of {}", value_budget(bytes.len()));
    }

    #[test]
    fn round_trips_every_supported_type() {
        let values = vec![
            Value::Number(-2.5),
            Value::Boolean(true),
            Value::String("ü".into()),
            Value::String("x".repeat(70_000)),
            obj(&[("a", Value::Null), ("b", Value::Undefined)]),
            Value::EcmaArray(vec![("duration".into(), Value::Number(0.0))]),
            Value::StrictArray(vec![Value::Number(1.0), Value::Boolean(false)]),
            Value::Date(1.7e12),
        ];
        let mut bytes = Vec::new();
        for v in &values {
            encode(v, &mut bytes);
        }
        assert_eq!(decode_all(&bytes).unwrap(), values);
    }

    #[test]
    fn every_truncation_fails_cleanly() {
        let mut bytes = Vec::new();
        encode(
            &obj(&[("app", Value::String("live".into())), ("n", Value::Number(3.0))]),
            &mut bytes,
        );
        let object_len = bytes.len();
        encode(&Value::StrictArray(vec![Value::Date(0.0)]), &mut bytes);
        for cut in 1..bytes.len() {
            // A cut just before the object's end marker, or right after it, leaves a whole
            // value (a missing end marker at the end of a message is tolerated).
            let whole = cut == object_len - 1 || cut == object_len;
            assert_eq!(decode_all(&bytes[..cut]).is_ok(), whole, "cut at {cut}");
        }
    }

    #[test]
    fn hostile_inputs_are_refused() {
        // A strict array claiming 4 billion items in 5 bytes.
        assert_eq!(
            decode_all(&[STRICT_ARRAY, 0xff, 0xff, 0xff, 0xff]),
            Err(AmfError::Truncated(5))
        );
        // A long string claiming 4 GiB.
        assert_eq!(
            decode_all(&[LONG_STRING, 0xff, 0xff, 0xff, 0xff, b'a']),
            Err(AmfError::Truncated(6))
        );
        // Nesting past the limit.
        let mut deep = Vec::new();
        for _ in 0..=MAX_DEPTH + 1 {
            deep.extend_from_slice(&[STRICT_ARRAY, 0, 0, 0, 1]);
        }
        deep.push(NULL);
        assert_eq!(decode_all(&deep), Err(AmfError::TooDeep));
        // AMF3 switch, references, typed objects.
        assert_eq!(
            decode_all(&[0x11]),
            Err(AmfError::UnsupportedMarker { marker: 0x11, offset: 0 })
        );
        assert_eq!(
            decode_all(&[0x07, 0, 1]),
            Err(AmfError::UnsupportedMarker { marker: 0x07, offset: 0 })
        );
        assert_eq!(decode_all(&[STRING, 0, 1, 0xff]), Err(AmfError::NotUtf8(3)));
    }
}
