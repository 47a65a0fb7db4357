use std::{fmt, io};

use bitflags::bitflags;
use bytes::{Bytes, BytesMut};
use http::{Method, Version};
use tokio_util::codec::{Decoder, Encoder};

use super::{
    decoder::{self, PayloadDecoder, PayloadItem, PayloadType},
    encoder, reserve_readbuf, Message, MessageType,
};
use crate::{
    body::BodySize,
    error::{ParseError, PayloadError},
    ConnectionType, RequestHeadType, ResponseHead, ServiceConfig,
};

bitflags! {
    #[derive(Debug, Clone, Copy)]
    struct Flags: u8 {
        const HEAD               = 0b0000_0001;
        const KEEP_ALIVE_ENABLED = 0b0000_1000;
        const STREAM             = 0b0001_0000;
    }
}

/// HTTP/1 Codec
pub struct ClientCodec {
    inner: ClientCodecInner,
}

/// HTTP/1 Payload Codec
pub struct ClientPayloadCodec {
    inner: ClientCodecInner,
    /// hubferry: how much room the next read of the payload gets; see [`ReadSize`].
    read_size: ReadSize,
}

/// hubferry: the room a payload read gets. A body relayed to a fast consumer is read in reads
/// that grow while they come back full (the socket had more waiting) and the consumer asks for
/// more at [`ReadSize::FAST_RATE`] or faster, doubling from the codec's usual 32 KiB up to
/// [`ReadSize::MAX`]: at loopback or LAN speeds a 32 KiB read costs a system call and a trip
/// through every layer above it per 32 KiB. Reads grow only once the consumer has kept that
/// pace for [`ReadSize::PROVEN_AFTER`] bytes in a row, more than a socket's send buffer holds:
/// a proxy's slow client takes its first megabytes fast, into the kernel's buffers. A consumer
/// that comes back slowly (a slow client behind a proxy, which holds each chunk until it is
/// sent) goes back to 32 KiB reads at once, so it holds no more memory than before.
///
/// Room is made when the next read is due, not when a chunk is handed on: by then a consumer
/// that is done with the last chunk has dropped it, and the buffer's allocation is reused
/// instead of a second one being made while the chunk is still held.
#[derive(Debug, Clone, Copy)]
struct ReadSize {
    size: usize,
    /// When the last chunk was handed on, its length, and whether its read came back full.
    last: Option<(std::time::Instant, usize, bool)>,
    /// Bytes the consumer has taken at `FAST_RATE` or faster since it last did not.
    fast_run: u64,
}

impl ReadSize {
    const MIN: usize = super::HW;
    const MAX: usize = 384 * 1024;
    /// Bytes per second at which a consumer must ask for more for reads to grow.
    const FAST_RATE: u64 = 64_000_000;
    /// Linux's default `tcp_wmem` maximum is 4 MiB.
    const PROVEN_AFTER: u64 = 8 << 20;

    fn new() -> Self {
        ReadSize {
            size: Self::MIN,
            last: None,
            fast_run: 0,
        }
    }

    /// A chunk of `len` bytes is handed on now; `filled` says whether its read came back full.
    fn handed(&mut self, len: usize, filled: bool, now: std::time::Instant) {
        self.last = Some((now, len, filled));
    }

    /// The room for the read due now.
    fn next(&mut self, now: std::time::Instant) -> usize {
        if let Some((at, len, filled)) = self.last.take() {
            let nanos = now.saturating_duration_since(at).as_nanos();
            // Asked again within the time `len` bytes take at FAST_RATE.
            let fast = nanos * u128::from(Self::FAST_RATE) <= len as u128 * 1_000_000_000;
            self.fast_run = if fast { self.fast_run + len as u64 } else { 0 };
            let proven = self.fast_run >= Self::PROVEN_AFTER;
            self.size = match (fast && proven, filled) {
                (false, _) => Self::MIN,
                (true, true) => (self.size * 2).min(Self::MAX),
                (true, false) => self.size,
            };
        }
        self.size
    }
}

struct ClientCodecInner {
    config: ServiceConfig,
    decoder: decoder::MessageDecoder<ResponseHead>,
    payload: Option<PayloadDecoder>,
    version: Version,
    conn_type: ConnectionType,

    // encoder part
    flags: Flags,
    encoder: encoder::MessageEncoder<RequestHeadType>,
}

impl Default for ClientCodec {
    /// hubferry: awc makes one for every request: its date is refreshed on use, without a task and a
    /// timer of its own (see [`ServiceConfig::on_demand_date`]).
    fn default() -> Self {
        ClientCodec::new(ServiceConfig::on_demand_date())
    }
}

impl fmt::Debug for ClientCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("h1::ClientCodec")
            .field("flags", &self.inner.flags)
            .finish_non_exhaustive()
    }
}

impl ClientCodec {
    /// Create HTTP/1 codec.
    ///
    /// `keepalive_enabled` how response `connection` header get generated.
    pub fn new(config: ServiceConfig) -> Self {
        let flags = if config.keep_alive().enabled() {
            Flags::KEEP_ALIVE_ENABLED
        } else {
            Flags::empty()
        };

        ClientCodec {
            inner: ClientCodecInner {
                config,
                decoder: decoder::MessageDecoder::default(),
                payload: None,
                version: Version::HTTP_11,
                conn_type: ConnectionType::Close,

                flags,
                encoder: encoder::MessageEncoder::default(),
            },
        }
    }

    /// Check if request is upgrade
    pub fn upgrade(&self) -> bool {
        self.inner.conn_type == ConnectionType::Upgrade
    }

    /// Check if last response is keep-alive
    pub fn keep_alive(&self) -> bool {
        self.inner.conn_type == ConnectionType::KeepAlive
    }

    /// Check last request's message type
    pub fn message_type(&self) -> MessageType {
        if self.inner.flags.contains(Flags::STREAM) {
            MessageType::Stream
        } else if self.inner.payload.is_none() {
            MessageType::None
        } else {
            MessageType::Payload
        }
    }

    /// Convert message codec to a payload codec
    pub fn into_payload_codec(self) -> ClientPayloadCodec {
        ClientPayloadCodec {
            inner: self.inner,
            read_size: ReadSize::new(),
        }
    }
}

impl ClientPayloadCodec {
    /// Check if last response is keep-alive
    pub fn keep_alive(&self) -> bool {
        self.inner.conn_type == ConnectionType::KeepAlive
    }

    /// Transform payload codec to a message codec
    pub fn into_message_codec(self) -> ClientCodec {
        ClientCodec { inner: self.inner }
    }
}

impl Decoder for ClientCodec {
    type Item = ResponseHead;
    type Error = ParseError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        debug_assert!(
            self.inner.payload.is_none(),
            "Payload decoder should not be set"
        );

        if let Some((req, payload)) = self.inner.decoder.decode(src)? {
            if let Some(conn_type) = req.conn_type() {
                // do not use peer's keep-alive
                self.inner.conn_type = if conn_type == ConnectionType::KeepAlive {
                    self.inner.conn_type
                } else {
                    conn_type
                };
            }

            if !self.inner.flags.contains(Flags::HEAD) {
                match payload {
                    PayloadType::None => self.inner.payload = None,
                    PayloadType::Payload(pl) => self.inner.payload = Some(pl),
                    PayloadType::Stream(pl) => {
                        self.inner.payload = Some(pl);
                        self.inner.flags.insert(Flags::STREAM);
                    }
                }
            } else {
                self.inner.payload = None;
            }
            reserve_readbuf(src);
            Ok(Some(req))
        } else {
            Ok(None)
        }
    }
}

impl Decoder for ClientPayloadCodec {
    type Item = Option<Bytes>;
    type Error = PayloadError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        debug_assert!(
            self.inner.payload.is_some(),
            "Payload decoder is not specified"
        );

        Ok(match self.inner.payload.as_mut().unwrap().decode(src)? {
            Some(PayloadItem::Chunk(chunk)) => {
                // hubferry: the read that brought this chunk used all its room when none is
                // left (the decoder took everything read, and the buffer keeps only the rest).
                let filled = src.capacity() == src.len();
                self.read_size
                    .handed(chunk.len(), filled, std::time::Instant::now());
                Some(Some(chunk))
            }
            Some(PayloadItem::Eof) => {
                self.inner.payload.take();
                Some(None)
            }
            None => {
                // hubferry: a read is due; room for it (see `ReadSize`). An empty buffer gets
                // about that room: its own allocation back when the consumer has let go of every
                // chunk cut from it and it is not much larger, a new one otherwise (`reserve`
                // would double it, and a large one kept would undo going back to small reads).
                if src.capacity() - src.len() < super::LW {
                    let size = self.read_size.next(std::time::Instant::now());
                    if !src.is_empty() {
                        src.reserve(size);
                    } else if !(src.try_reclaim(size) && src.capacity() <= 2 * size) {
                        *src = BytesMut::with_capacity(size);
                    }
                }
                None
            }
        })
    }
}

impl Encoder<Message<(RequestHeadType, BodySize)>> for ClientCodec {
    type Error = io::Error;

    fn encode(
        &mut self,
        item: Message<(RequestHeadType, BodySize)>,
        dst: &mut BytesMut,
    ) -> Result<(), Self::Error> {
        match item {
            Message::Item((mut head, length)) => {
                let inner = &mut self.inner;
                inner.version = head.as_ref().version;
                inner
                    .flags
                    .set(Flags::HEAD, head.as_ref().method == Method::HEAD);

                // connection status
                inner.conn_type = match head.as_ref().connection_type() {
                    ConnectionType::KeepAlive => {
                        if inner.flags.contains(Flags::KEEP_ALIVE_ENABLED) {
                            ConnectionType::KeepAlive
                        } else {
                            ConnectionType::Close
                        }
                    }
                    ConnectionType::Upgrade => ConnectionType::Upgrade,
                    ConnectionType::Close => ConnectionType::Close,
                };

                inner.encoder.encode(
                    dst,
                    &mut head,
                    false,
                    false,
                    inner.version,
                    length,
                    inner.conn_type,
                    &inner.config,
                )?;
            }
            Message::Chunk(Some(bytes)) => {
                self.inner.encoder.encode_chunk(bytes.as_ref(), dst)?;
            }
            Message::Chunk(None) => {
                self.inner.encoder.encode_eof(dst)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::RequestHead;

    /// hubferry: see `DateService::on_demand`.
    #[test]
    fn a_default_codec_spawns_nothing_and_dates_its_requests() {
        // No runtime here: a codec whose date service spawned a task (as every codec awc made
        // did, one per request) would panic.
        let mut codec = ClientCodec::default();
        let mut head = RequestHead::default();
        head.uri = http::Uri::from_static("/v2/");
        let mut dst = BytesMut::new();
        codec
            .encode(
                Message::Item((RequestHeadType::Owned(head), BodySize::Sized(0))),
                &mut dst,
            )
            .unwrap();
        let text = String::from_utf8(dst.to_vec()).unwrap();
        assert!(text.starts_with("GET /v2/ HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("date: "), "{text}");
    }

    /// A `ReadSize` whose consumer has just proven fast: `PROVEN_AFTER` bytes taken at once.
    fn proven(now: Instant) -> ReadSize {
        let mut read_size = ReadSize::new();
        read_size.handed(ReadSize::PROVEN_AFTER as usize, false, now);
        assert_eq!(read_size.next(now), ReadSize::MIN);
        read_size
    }

    /// hubferry: reads stay small until the consumer has taken `PROVEN_AFTER` bytes fast, then
    /// they grow; a slow chunk on the way starts the proof again.
    #[test]
    fn read_size_grows_only_after_the_consumer_proved_fast() {
        let mut read_size = ReadSize::new();
        let now = Instant::now();
        let full_reads = (ReadSize::PROVEN_AFTER as usize / ReadSize::MIN) - 1;
        for _ in 0..full_reads {
            read_size.handed(ReadSize::MIN, true, now);
            assert_eq!(read_size.next(now), ReadSize::MIN);
        }
        // 32 KiB asked again after 1 s: slow; the run starts again.
        read_size.handed(ReadSize::MIN, true, now);
        assert_eq!(read_size.next(now + Duration::from_secs(1)), ReadSize::MIN);
        read_size.handed(ReadSize::MIN, true, now);
        assert_eq!(read_size.next(now), ReadSize::MIN);
        for _ in 0..full_reads {
            read_size.handed(ReadSize::MIN, true, now);
            read_size.next(now);
        }
        assert_eq!(read_size.next(now), 2 * ReadSize::MIN);
    }

    /// hubferry: reads that come back full to a fast consumer double up to `ReadSize::MAX`, and
    /// never beyond it.
    #[test]
    fn read_size_doubles_to_max_while_fast_and_filled() {
        let now = Instant::now();
        let mut read_size = proven(now);

        let mut sizes = Vec::new();
        for _ in 0..7 {
            let size = read_size.next(now);
            sizes.push(size / 1024);
            read_size.handed(size, true, now);
        }
        assert_eq!(sizes, [32, 64, 128, 256, 384, 384, 384]);

        read_size.handed(100 * ReadSize::MAX, true, now);
        assert_eq!(read_size.next(now), ReadSize::MAX);
    }

    /// hubferry: a read that did not come back full keeps the size, however fast the consumer.
    #[test]
    fn read_size_stays_when_fast_but_not_filled() {
        let now = Instant::now();
        let mut read_size = proven(now);
        read_size.handed(ReadSize::MIN, true, now);
        assert_eq!(read_size.next(now), 2 * ReadSize::MIN);

        // 64 KiB asked again after 1 ms: faster than 64 MB/s.
        read_size.handed(64 * 1024, false, now);
        assert_eq!(
            read_size.next(now + Duration::from_millis(1)),
            2 * ReadSize::MIN
        );
    }

    /// hubferry: a consumer slower than `ReadSize::FAST_RATE` goes back to `ReadSize::MIN` at
    /// once.
    #[test]
    fn read_size_back_to_min_when_slow() {
        let now = Instant::now();
        let mut read_size = proven(now);
        for _ in 0..5 {
            let size = read_size.next(now);
            read_size.handed(size, true, now);
        }
        assert_eq!(read_size.next(now), ReadSize::MAX);

        // 384 KiB take 6.144 ms at 64 MB/s: asked again after 6 ms is fast, after 7 ms slow.
        read_size.handed(ReadSize::MAX, true, now);
        assert_eq!(
            read_size.next(now + Duration::from_millis(6)),
            ReadSize::MAX
        );
        read_size.handed(ReadSize::MAX, true, now);
        assert_eq!(
            read_size.next(now + Duration::from_millis(7)),
            ReadSize::MIN
        );
    }

    /// hubferry: once a chunk is handed on and the buffer is empty, the read that is due gets at
    /// least `ReadSize::MIN` of room, also while the chunk is still held.
    #[actix_rt::test]
    async fn payload_decode_makes_room_for_the_next_read() {
        let mut codec = ClientCodec::default();
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_some());
        let mut codec = codec.into_payload_codec();

        // A read that used all its room.
        let mut buf = BytesMut::from(&[b'x'; 1000][..]);
        assert_eq!(buf.capacity(), buf.len());
        let chunk = codec.decode(&mut buf).unwrap().unwrap().unwrap();
        assert_eq!(chunk.len(), 1000);
        assert!(buf.is_empty());

        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(
            buf.capacity() - buf.len() >= 32 * 1024,
            "room for the next read: {}",
            buf.capacity() - buf.len()
        );
        assert_eq!(chunk, &[b'x'; 1000][..]);
    }
}
