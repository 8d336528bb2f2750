//! The on-disk record frame.
//!
//! ```text
//! frame := body_len:u32 | crc32(body):u32 | body
//! body  := offset:u64 | timestamp_ms:i64 | key_len:i32 (-1: no key) | key
//!          | header_count:u32 | (name_len:u32 | name | value_len:u32 | value)*
//!          | value (the rest of the body)
//! ```
//!
//! All integers little endian. The offset inside the body lets recovery check that
//! frames are contiguous; the CRC detects torn and corrupted writes.

use bytes::Bytes;

use crate::{Header, Message, Offset, Partition, Record};

/// Bytes before the body: length and CRC.
pub(crate) const FRAME_HEADER_LEN: usize = 8;
/// Smallest body: offset, timestamp, key length, header count.
pub(crate) const MIN_BODY_LEN: usize = 8 + 8 + 4 + 4;
/// Largest body accepted (a message must fit in one frame).
pub(crate) const MAX_BODY_LEN: usize = 256 << 20;

/// Body length of `msg` once encoded.
pub(crate) fn body_len(msg: &Message) -> usize {
    MIN_BODY_LEN
        + msg.key.as_ref().map_or(0, Bytes::len)
        + msg
            .headers
            .iter()
            .map(|h| 8 + h.key.len() + h.value.len())
            .sum::<usize>()
        + msg.value.len()
}

/// Total frame length of `msg` once encoded.
pub(crate) fn frame_len(msg: &Message) -> usize {
    FRAME_HEADER_LEN + body_len(msg)
}

/// Appends the frame of `msg` at `offset` to `buf`. The caller checked that its body is
/// at most [`MAX_BODY_LEN`].
pub(crate) fn encode(buf: &mut Vec<u8>, offset: Offset, timestamp_ms: i64, msg: &Message) {
    let body = body_len(msg);
    buf.reserve(FRAME_HEADER_LEN + body);
    let start = buf.len();
    buf.extend_from_slice(&(body as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&timestamp_ms.to_le_bytes());
    match &msg.key {
        Some(key) => {
            buf.extend_from_slice(&(key.len() as i32).to_le_bytes());
            buf.extend_from_slice(key);
        }
        None => buf.extend_from_slice(&(-1i32).to_le_bytes()),
    }
    buf.extend_from_slice(&(msg.headers.len() as u32).to_le_bytes());
    for header in &msg.headers {
        buf.extend_from_slice(&(header.key.len() as u32).to_le_bytes());
        buf.extend_from_slice(header.key.as_bytes());
        buf.extend_from_slice(&(header.value.len() as u32).to_le_bytes());
        buf.extend_from_slice(&header.value);
    }
    buf.extend_from_slice(&msg.value);
    let crc = crc32fast::hash(&buf[start + FRAME_HEADER_LEN..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The length and checksum at the start of a frame.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrameHeader {
    pub body_len: usize,
    pub crc: u32,
}

impl FrameHeader {
    /// Parses the first [`FRAME_HEADER_LEN`] bytes of `bytes`; `None` when the length is
    /// impossible (garbage or a torn write).
    pub fn parse(bytes: &[u8]) -> Option<FrameHeader> {
        let body_len = u32::from_le_bytes(bytes[0..4].try_into().ok()?) as usize;
        let crc = u32::from_le_bytes(bytes[4..8].try_into().ok()?);
        (MIN_BODY_LEN..=MAX_BODY_LEN)
            .contains(&body_len)
            .then_some(FrameHeader { body_len, crc })
    }

    pub fn frame_len(&self) -> usize {
        FRAME_HEADER_LEN + self.body_len
    }

    /// Whether `body` matches the checksum.
    pub fn check(&self, body: &[u8]) -> bool {
        crc32fast::hash(body) == self.crc
    }
}

/// The offset stored at the start of a body.
pub(crate) fn body_offset(body: &[u8]) -> Offset {
    let mut b = [0u8; 8];
    b.copy_from_slice(&body[..8]);
    u64::from_le_bytes(b)
}

/// Decodes a checked body. `body` is a slice of a larger read buffer: key, value and
/// header values share it without copying.
pub(crate) fn decode(body: &Bytes, topic: &str, partition: Partition) -> Result<Record, String> {
    let mut r = Reader { buf: body, pos: 0 };
    let offset = r.u64()?;
    let timestamp_ms = r.u64()? as i64;
    let key_len = r.u32()? as i32;
    let key = if key_len < 0 {
        None
    } else {
        Some(r.bytes(key_len as usize)?)
    };
    let count = r.u32()? as usize;
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let len = r.u32()? as usize;
        let name = r.bytes(len)?;
        let name = std::str::from_utf8(&name)
            .map_err(|_| "header name is not UTF-8".to_string())?
            .to_owned();
        let len = r.u32()? as usize;
        headers.push(Header {
            key: name,
            value: r.bytes(len)?,
        });
    }
    let value = body.slice(r.pos..);
    Ok(Record {
        topic: topic.to_owned(),
        partition,
        offset,
        key,
        value,
        headers,
        timestamp_ms,
    })
}

struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<std::ops::Range<usize>, String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or("record body too short")?;
        let range = self.pos..end;
        self.pos = end;
        Ok(range)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let range = self.take(4)?;
        Ok(u32::from_le_bytes(
            self.buf[range].try_into().map_err(|_| "short field")?,
        ))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let range = self.take(8)?;
        Ok(u64::from_le_bytes(
            self.buf[range].try_into().map_err(|_| "short field")?,
        ))
    }

    fn bytes(&mut self, n: usize) -> Result<Bytes, String> {
        let range = self.take(n)?;
        Ok(self.buf.slice(range))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(msg: &Message, offset: Offset, ts: i64) -> Record {
        let mut buf = Vec::new();
        encode(&mut buf, offset, ts, msg);
        assert_eq!(buf.len(), frame_len(msg));
        let header = FrameHeader::parse(&buf).unwrap();
        assert_eq!(header.frame_len(), buf.len());
        let body = Bytes::from(buf).slice(FRAME_HEADER_LEN..);
        assert!(header.check(&body));
        assert_eq!(body_offset(&body), offset);
        decode(&body, "t", 3).unwrap()
    }

    #[test]
    fn encode_decode_round_trip() {
        let msg = Message::new(Some(Bytes::from_static(b"tenant/svc")), &b"payload"[..])
            .with_header("tenant", &b"acme"[..])
            .with_header("empty", Bytes::new())
            .with_header("tenant", &b"second"[..]);
        let rec = round_trip(&msg, 42, -5);
        assert_eq!(rec.offset, 42);
        assert_eq!(rec.partition, 3);
        assert_eq!(rec.topic, "t");
        assert_eq!(rec.timestamp_ms, -5);
        assert_eq!(rec.key.as_deref(), Some(&b"tenant/svc"[..]));
        assert_eq!(&rec.value[..], b"payload");
        assert_eq!(rec.headers, msg.headers);
    }

    #[test]
    fn no_key_and_empty_key_differ() {
        let none = round_trip(&Message::new(None, Bytes::new()), 0, 1);
        assert_eq!(none.key, None);
        assert!(none.value.is_empty());
        let empty = round_trip(&Message::new(Some(Bytes::new()), &b"v"[..]), 1, 1);
        assert_eq!(empty.key.as_deref(), Some(&b""[..]));
    }

    #[test]
    fn corruption_is_detected() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, 1, &Message::new(None, &b"hello"[..]));
        let header = FrameHeader::parse(&buf).unwrap();
        buf[FRAME_HEADER_LEN + 20] ^= 0xff;
        assert!(!header.check(&buf[FRAME_HEADER_LEN..]));
        assert!(FrameHeader::parse(&[0xff; 8]).is_none());
        assert!(FrameHeader::parse(&[0; 8]).is_none());
    }
}
