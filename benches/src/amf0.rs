//! The AMF0 subset RTMP commands use (AMF0 specification §2): numbers, booleans, strings,
//! objects, null, and ECMA arrays on the way in. The publisher only encodes its own commands
//! and reads the server's `_result` and `onStatus`; anything else decodes to `Unsupported`.

/// AMF0 type markers (§2.1).
const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const LONG_STRING: u8 = 0x0c;
/// Nesting accepted from the server; commands nest one or two levels.
const MAX_DEPTH: usize = 8;

/// An AMF0 value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Number(f64),
    Boolean(bool),
    String(String),
    Object(Vec<(String, Self)>),
    Null,
}

impl Value {
    pub(crate) fn str(text: &str) -> Self {
        Self::String(text.to_owned())
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_number(&self) -> Option<f64> {
        match self {
            Self::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The property `name` of an object.
    pub(crate) fn get(&self, name: &str) -> Option<&Self> {
        match self {
            Self::Object(props) => props.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Appends the encoding of `value` to `out`.
pub(crate) fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Number(n) => {
            out.push(NUMBER);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Value::Boolean(b) => out.extend_from_slice(&[BOOLEAN, u8::from(*b)]),
        Value::String(s) => {
            out.push(STRING);
            encode_key(s, out);
        }
        Value::Object(props) => {
            out.push(OBJECT);
            for (k, v) in props {
                encode_key(k, out);
                encode(v, out);
            }
            out.extend_from_slice(&[0, 0, OBJECT_END]);
        }
        Value::Null => out.push(NULL),
    }
}

fn encode_key(s: &str, out: &mut Vec<u8>) {
    // Commands carry short ASCII strings; a longer one is cut rather than mis-framed.
    let bytes = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Every value of a command message body, or `None` if it is malformed or uses a type this
/// subset does not read.
pub(crate) fn decode_all(mut input: &[u8]) -> Option<Vec<Value>> {
    let mut values = Vec::new();
    while !input.is_empty() {
        values.push(decode(&mut input, 0)?);
    }
    Some(values)
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, tail) = input.split_at_checked(n)?;
    *input = tail;
    Some(head)
}

fn decode_key(input: &mut &[u8], long: bool) -> Option<String> {
    let len = if long {
        u32::from_be_bytes(take(input, 4)?.try_into().ok()?) as usize
    } else {
        usize::from(u16::from_be_bytes(take(input, 2)?.try_into().ok()?))
    };
    Some(String::from_utf8_lossy(take(input, len)?).into_owned())
}

fn decode_props(input: &mut &[u8], depth: usize) -> Option<Vec<(String, Value)>> {
    let mut props = Vec::new();
    loop {
        let key = decode_key(input, false)?;
        if key.is_empty() && input.first() == Some(&OBJECT_END) {
            *input = &input[1..];
            return Some(props);
        }
        props.push((key, decode(input, depth + 1)?));
    }
}

fn decode(input: &mut &[u8], depth: usize) -> Option<Value> {
    if depth > MAX_DEPTH {
        return None;
    }
    let marker = *take(input, 1)?.first()?;
    Some(match marker {
        NUMBER => Value::Number(f64::from_be_bytes(take(input, 8)?.try_into().ok()?)),
        BOOLEAN => Value::Boolean(*take(input, 1)?.first()? != 0),
        STRING => Value::String(decode_key(input, false)?),
        LONG_STRING => Value::String(decode_key(input, true)?),
        OBJECT => Value::Object(decode_props(input, depth)?),
        ECMA_ARRAY => {
            take(input, 4)?; // the count is a hint; the end marker ends it
            Value::Object(decode_props(input, depth)?)
        }
        NULL | UNDEFINED => Value::Null,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_of_a_connect_command() {
        let values = vec![
            Value::str("connect"),
            Value::Number(1.0),
            Value::Object(vec![
                ("app".into(), Value::str("live")),
                ("fpad".into(), Value::Boolean(false)),
                ("nested".into(), Value::Object(vec![("x".into(), Value::Null)])),
            ]),
            Value::Null,
        ];
        let mut out = Vec::new();
        for v in &values {
            encode(v, &mut out);
        }
        assert_eq!(decode_all(&out), Some(values));
    }

    #[test]
    fn ecma_arrays_decode_as_objects_and_truncation_is_refused() {
        let mut out = vec![ECMA_ARRAY, 0, 0, 0, 1];
        encode_key("code", &mut out);
        encode(&Value::str("NetStream.Publish.Start"), &mut out);
        out.extend_from_slice(&[0, 0, OBJECT_END]);
        let value = &decode_all(&out).unwrap()[0];
        assert_eq!(value.get("code").and_then(Value::as_str), Some("NetStream.Publish.Start"));
        for cut in 0..out.len() - 1 {
            assert_eq!(decode_all(&out[..=cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut out = Vec::new();
        for _ in 0..=MAX_DEPTH + 1 {
            out.push(OBJECT);
            encode_key("a", &mut out);
        }
        out.push(NULL);
        assert_eq!(decode_all(&out), None);
    }
}
