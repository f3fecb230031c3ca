//! The cluster's frame decoder under good and bad input (rule 110 in
//! `src/cluster/mod.rs`): round trips at every split, the size limit
//! before allocation, and 10,000 random and mutated inputs per run that
//! never panic.
#![cfg(feature = "cluster")]

mod common;

use proptest::prelude::*;
use stakplane::cluster::{Frame, FrameReader, NodeId, Pid, WireError, MAX_FRAME, WIRE_VERSION};
use std::net::SocketAddr;

fn node(n: u8) -> NodeId {
    NodeId::new(SocketAddr::from(([127, 0, 0, n], 9000)), u64::from(n))
}

fn frames() -> Vec<Frame> {
    vec![
        Frame::Hello {
            version: WIRE_VERSION,
            node: node(1),
        },
        Frame::Gossip(vec![1, 2, 3]),
        Frame::Send {
            to: 42,
            from: Some(Pid {
                node: node(2),
                device: 7,
            }),
            payload: vec![0xAB; 300],
            dst: node(1),
        },
        Frame::Send {
            to: 1,
            from: None,
            payload: Vec::new(),
            dst: node(1),
        },
    ]
}

fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        f.encode_into(&mut out, MAX_FRAME).expect("encodes");
    }
    out
}

/// Everything `reader` yields until it needs more bytes or fails.
fn drain(reader: &mut FrameReader) -> (Vec<Frame>, Option<WireError>) {
    let mut got = Vec::new();
    loop {
        match reader.next_frame() {
            Ok(Some(f)) => got.push(f),
            Ok(None) => return (got, None),
            Err(e) => return (got, Some(e)),
        }
    }
}

#[test]
fn wire_frames_split_at_every_byte_boundary_decode_as_whole() {
    let all = frames();
    let bytes = encode(&all);
    for split in 0..=bytes.len() {
        let mut r = FrameReader::new(MAX_FRAME);
        r.push(&bytes[..split]);
        let (mut got, err) = drain(&mut r);
        assert!(err.is_none());
        r.push(&bytes[split..]);
        let (rest, err) = drain(&mut r);
        assert!(err.is_none());
        got.extend(rest);
        assert_eq!(got, all, "split at {split}");
        assert_eq!(r.pending(), 0);
    }
}

#[test]
fn wire_a_length_above_the_limit_is_refused_before_allocation() {
    let mut r = FrameReader::new(1024);
    // 4 GiB announced: refused from the prefix alone.
    r.push(&[0xFF, 0xFF, 0xFF, 0xFF]);
    match r.next_frame() {
        Err(WireError::TooLarge { len, max }) => {
            assert_eq!((len, max), (u32::MAX as usize, 1024));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // The stream is unusable after: nothing more comes out.
    r.push(&encode(&frames()));
    assert!(matches!(r.next_frame(), Ok(None)));
    // A sender refuses to encode past its own limit, appending nothing.
    let mut out = vec![9];
    let big = Frame::Gossip(vec![0; 2048]);
    assert!(matches!(
        big.encode_into(&mut out, 1024),
        Err(WireError::Oversized { max: 1024, .. })
    ));
    assert_eq!(out, [9]);
}

#[test]
fn wire_a_malformed_body_is_a_typed_error_with_its_source() {
    let mut r = FrameReader::new(MAX_FRAME);
    // A 3-byte body whose enum tag names no variant.
    r.push(&[0, 0, 0, 3, 0x7F, 0, 0]);
    let err = r.next_frame().expect_err("malformed");
    assert!(matches!(err, WireError::Malformed(_)));
    assert!(std::error::Error::source(&err).is_some());
    assert!(err.to_string().starts_with("malformed frame"));
}

/// Input made from valid frames with bytes flipped, cut or inserted.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let bytes = encode(&frames());
    let len = bytes.len();
    (
        proptest::collection::vec((0..len, any::<u8>()), 0..8),
        0..=len,
        proptest::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(move |(flips, cut, extra)| {
            let mut b = bytes.clone();
            for (at, v) in flips {
                b[at] ^= v;
            }
            b.truncate(cut);
            b.extend(extra);
            b
        })
}

proptest! {
    #![proptest_config(common::cases(10_000))]

    #[test]
    fn wire_no_input_makes_the_decoder_panic_or_buffer_past_the_limit(
        input in prop_oneof![proptest::collection::vec(any::<u8>(), 0..512), mutated()],
        chunk in 1usize..64,
    ) {
        let max = 256;
        // A whole packet (as the in-memory and simulated networks hand
        // them over): a frame or a typed error, never a panic.
        match Frame::decode(&input, max) {
            Ok(f) => {
                let mut out = Vec::new();
                prop_assert!(f.encode_into(&mut out, max).is_ok());
            }
            Err(e) => prop_assert!(
                matches!(e, WireError::TooLarge { .. } | WireError::Malformed(_) | WireError::Truncated { .. } | WireError::Trailing { .. }),
                "untyped error {:?}", e
            ),
        }
        let mut r = FrameReader::new(max);
        for piece in input.chunks(chunk) {
            r.push(piece);
            let (got, err) = drain(&mut r);
            for f in &got {
                // Whatever decodes re-encodes within the limit.
                let mut out = Vec::new();
                prop_assert!(f.encode_into(&mut out, max).is_ok());
            }
            if let Some(e) = err {
                let typed = matches!(e, WireError::TooLarge { .. } | WireError::Malformed(_) | WireError::Trailing { .. });
                prop_assert!(typed, "untyped error {:?}", e);
            }
            // Undecoded bytes never exceed one frame plus one read.
            prop_assert!(r.pending() <= max + 4 + chunk, "pending {}", r.pending());
        }
    }
}

/// Rule 110: a frame is exactly its body. A body that holds a whole
/// frame and more (bytes behind it: junk, or a second frame that a buggy
/// or hostile peer slipped inside one length prefix) is a typed error, in
/// a whole packet as in a stream; it was taken as the frame in front,
/// the rest dropped in silence.
#[test]
fn wire_a_body_with_bytes_behind_its_frame_is_refused_typed() {
    let hello = Frame::Hello {
        version: WIRE_VERSION,
        node: node(1),
    };
    let mut one = Vec::new();
    hello.encode_into(&mut one, MAX_FRAME).expect("encodes");
    let mut second = Vec::new();
    Frame::Gossip(vec![7; 5])
        .encode_into(&mut second, MAX_FRAME)
        .expect("encodes");
    for behind in [vec![0xEE], vec![0; 3], second[4..].to_vec()] {
        let mut packet = one.clone();
        packet.extend_from_slice(&behind);
        let len = u32::try_from(packet.len() - 4).expect("fits");
        packet[..4].copy_from_slice(&len.to_be_bytes());
        match Frame::decode(&packet, MAX_FRAME) {
            Err(WireError::Trailing { extra }) => assert_eq!(extra, behind.len()),
            other => panic!("{behind:?} behind a frame in a packet: {other:?}"),
        }
        let mut r = FrameReader::new(MAX_FRAME);
        r.push(&packet);
        r.push(&one);
        let (got, err) = drain(&mut r);
        assert!(got.is_empty(), "{got:?}");
        match err {
            Some(WireError::Trailing { extra }) => assert_eq!(extra, behind.len()),
            other => panic!("{behind:?} behind a frame in a stream: {other:?}"),
        }
        // The stream is unusable after, as for any malformed body.
        assert!(matches!(r.next_frame(), Ok(None)));
        // The error says what is wrong.
        let text = Frame::decode(&packet, MAX_FRAME)
            .expect_err("refused")
            .to_string();
        assert!(text.contains("behind"), "{text}");
    }
}
