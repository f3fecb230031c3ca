//! Node sessions: Noise XXpsk2 keyed by the cluster secret, without I/O
//! (rule 116 in `src/cluster/mod.rs`), and per-node keys (rule 116a).
#![cfg(feature = "cluster")]

mod common;

use proptest::prelude::*;
use stakplane::cluster::{
    Credentials, Frame, Identity, KeyError, NodeId, Pins, PublicKey, Secret, Session, SessionError,
    WIRE_VERSION,
};
use std::net::SocketAddr;

fn node(n: u8) -> NodeId {
    NodeId::new(SocketAddr::from(([10, 0, 2, n], 7000)), 1)
}

fn secret(b: u8) -> Secret {
    Secret::new([b; 32])
}

/// An initiator (node 1) and a responder (node 2) with the same secret
/// `secret(key)`, before their handshake.
fn sessions(key: u8) -> (Session, Session) {
    let a = Session::initiator(node(1), &secret(key)).expect("noise");
    let b = Session::responder(node(2), &secret(key)).expect("noise");
    (a, b)
}

/// [`sessions`] after their handshake.
fn established(key: u8) -> (Session, Session) {
    let (mut a, mut b) = sessions(key);
    pump(&mut a, &mut b).expect("handshake");
    (a, b)
}

/// Moves bytes between the two sides until neither has anything to send;
/// the frames each received.
fn pump(a: &mut Session, b: &mut Session) -> Result<(Vec<Frame>, Vec<Frame>), SessionError> {
    let (mut to_a, mut to_b) = (Vec::new(), Vec::new());
    loop {
        let out_a = a.take_output();
        let out_b = b.take_output();
        if out_a.is_empty() && out_b.is_empty() {
            return Ok((to_a, to_b));
        }
        to_b.extend(b.receive(&out_a)?);
        to_a.extend(a.receive(&out_b)?);
    }
}

#[test]
fn session_with_the_same_secret_authenticates_both_sides_and_carries_frames_both_ways() {
    let (mut a, mut b) = established(7);
    assert!(a.is_established() && b.is_established());
    assert_eq!((a.peer(), b.peer()), (Some(node(2)), Some(node(1))));
    // A frame larger than one Noise message is cut and put back together.
    let big = Frame::Gossip(vec![0x5A; 200_000]);
    let small = Frame::Send {
        to: 3,
        from: None,
        payload: b"hi".to_vec(),
        dst: node(2),
    };
    a.send(&big).expect("sends");
    a.send(&small).expect("sends");
    b.send(&small).expect("sends");
    let (at_a, at_b) = pump(&mut a, &mut b).expect("frames");
    assert_eq!(at_b, [big, small.clone()]);
    assert_eq!(at_a, [small]);
}

#[test]
fn session_with_a_wrong_secret_is_refused_typed() {
    // Whichever side lacks the secret, the side that connects finds the
    // mismatch at the second message, before it reads the other's hello,
    // and the side that accepts is left mid-handshake.
    for (sa, sb) in [(1, 2), (2, 1)] {
        let mut a = Session::initiator(node(1), &secret(sa)).expect("noise");
        let mut b = Session::responder(node(2), &secret(sb)).expect("noise");
        let err = pump(&mut a, &mut b).expect_err("refused");
        assert!(matches!(err, SessionError::Noise(_)), "{err:?}");
        assert!(!a.is_established() && a.peer().is_none(), "a took {a:?}");
        assert!(!b.is_established() && b.peer().is_none(), "b took {b:?}");
        assert!(matches!(a.receive(&[]), Err(SessionError::Failed)));
        assert!(matches!(
            a.send(&Frame::Gossip(vec![])),
            Err(SessionError::Failed)
        ));
        assert!(matches!(b.end_of_input(), Err(SessionError::Unfinished)));
    }
}

#[test]
fn session_with_a_wrong_secret_is_refused_before_the_version_is_checked() {
    let mut a = Session::initiator(node(1), &secret(1)).expect("noise");
    let mut b = Session::with_version(node(2), &secret(2), false, WIRE_VERSION + 1).expect("noise");
    let err = pump(&mut a, &mut b).expect_err("refused");
    assert!(matches!(err, SessionError::Noise(_)), "{err:?}");
}

#[test]
fn session_with_another_wire_version_is_refused_after_authentication() {
    let mut a = Session::with_version(node(1), &secret(3), true, WIRE_VERSION + 1).expect("noise");
    let mut b = Session::responder(node(2), &secret(3)).expect("noise");
    let err = pump(&mut a, &mut b).expect_err("refused");
    assert!(
        matches!(err, SessionError::Version { got, want } if got == WIRE_VERSION + 1 && want == WIRE_VERSION),
        "{err:?}"
    );
}

#[test]
fn session_tampered_bytes_are_refused() {
    let (mut a, mut b) = established(4);
    a.send(&Frame::Gossip(vec![1, 2, 3])).expect("sends");
    let mut bytes = a.take_output();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert!(matches!(b.receive(&bytes), Err(SessionError::Noise(_))));
}

#[test]
fn session_keepalives_carry_no_frame_and_are_counted() {
    let (mut a, mut b) = sessions(5);
    assert!(matches!(a.send_keepalive(), Err(SessionError::Failed)));
    pump(&mut a, &mut b).expect("handshake");
    a.send_keepalive().expect("encrypts");
    let bytes = a.take_output();
    assert_eq!(bytes.len(), 2 + 16, "a length and a tag");
    a.send(&Frame::Gossip(vec![1])).expect("sends");
    a.send_keepalive().expect("encrypts");
    let mut all = bytes;
    all.extend(a.take_output());
    assert_eq!(b.receive(&all).expect("decrypts"), [Frame::Gossip(vec![1])]);
    assert_eq!(b.keepalives_received(), 2);
    assert_eq!(a.keepalives_received(), 0);
}

#[test]
fn session_end_of_input_names_a_message_or_frame_cut_short() {
    let (mut a, mut b) = established(6);
    // Part of a Noise message.
    a.send(&Frame::Gossip(vec![1, 2, 3])).expect("sends");
    let bytes = a.take_output();
    assert!(b.receive(&bytes[..5]).expect("waits").is_empty());
    assert_eq!(b.pending(), 5);
    assert!(matches!(
        b.end_of_input(),
        Err(SessionError::Truncated { pending: 5 })
    ));
    assert!(matches!(b.receive(&bytes[5..]), Err(SessionError::Failed)));
    // A whole Noise message holding part of a frame.
    let (mut a, mut b) = established(6);
    a.send_encoded(&[0, 0, 0, 9, 1]).expect("encrypts");
    assert!(b.receive(&a.take_output()).expect("waits").is_empty());
    assert!(matches!(
        b.end_of_input(),
        Err(SessionError::Truncated { pending: 5 })
    ));
    // Nothing pending: a clean end.
    let (_a, mut b) = established(6);
    assert!(b.end_of_input().is_ok());
    assert!(matches!(b.end_of_input(), Err(SessionError::Failed)));
}

/// Credentials with the secret `secret(5)`, identity `me`, and the keys
/// of `pinned` pinned for the address of each node.
fn keyed(me: &Identity, pinned: &[(NodeId, &Identity)]) -> Credentials {
    let pins: Pins = pinned
        .iter()
        .map(|(n, id)| (n.addr, id.public_key()))
        .collect();
    Credentials::new(secret(5)).identity(me.clone()).pins(pins)
}

fn identity() -> Identity {
    Identity::generate().expect("random keys")
}

#[test]
fn session_with_pinned_keys_admits_a_peer_that_proves_the_key_pinned_for_its_address() {
    let (k1, k2) = (identity(), identity());
    let both = [(node(1), &k1), (node(2), &k2)];
    let mut a = Session::initiator_with(node(1), &keyed(&k1, &both)).expect("noise");
    let mut b = Session::responder_with(node(2), &keyed(&k2, &both)).expect("noise");
    pump(&mut a, &mut b).expect("handshake");
    assert_eq!((a.peer(), b.peer()), (Some(node(2)), Some(node(1))));
    a.send(&Frame::Gossip(vec![1])).expect("sends");
    let (_, at_b) = pump(&mut a, &mut b).expect("frames");
    assert_eq!(at_b, [Frame::Gossip(vec![1])]);
    // A side without pins admits a keyed peer, as with the secret alone.
    let mut a = Session::initiator_with(node(1), &keyed(&k1, &both)).expect("noise");
    let mut b = Session::responder(node(2), &secret(5)).expect("noise");
    // ... but the keyed side does not admit it: its key is a fresh one.
    let err = pump(&mut a, &mut b).expect_err("refused");
    assert!(
        matches!(err, SessionError::WrongKey { peer } if peer == node(2)),
        "{err:?}"
    );
    let mut a = Session::initiator(node(1), &secret(5)).expect("noise");
    let mut b =
        Session::responder_with(node(2), &Credentials::new(secret(5)).identity(k2)).expect("noise");
    pump(&mut a, &mut b).expect("no pins: the secret admits");
}

#[test]
fn session_with_pinned_keys_refuses_a_peer_that_proves_another_key_on_either_side() {
    let (k1, k2, rogue) = (identity(), identity(), identity());
    let both = [(node(1), &k1), (node(2), &k2)];
    // The side that accepts holds another key than node 2's: the side
    // that connects refuses it at the second message, before it sends
    // its own hello.
    let mut a = Session::initiator_with(node(1), &keyed(&k1, &both)).expect("noise");
    let mut b = Session::responder_with(node(2), &keyed(&rogue, &both)).expect("noise");
    let err = pump(&mut a, &mut b).expect_err("refused");
    assert!(
        matches!(err, SessionError::WrongKey { peer } if peer == node(2)),
        "{err:?}"
    );
    assert!(!a.is_established() && a.peer().is_none());
    assert!(b.peer().is_none(), "a's hello was never sent: {b:?}");
    // A holder of the secret that names node 1 without its key: refused
    // by the side that accepts, at the third message.
    let mut a = Session::initiator_with(node(1), &keyed(&rogue, &both)).expect("noise");
    let mut b = Session::responder_with(node(2), &keyed(&k2, &both)).expect("noise");
    let err = pump(&mut a, &mut b).expect_err("refused");
    assert!(
        matches!(err, SessionError::WrongKey { peer } if peer == node(1)),
        "{err:?}"
    );
    assert!(!b.is_established() && b.peer().is_none());
    assert!(matches!(b.receive(&[]), Err(SessionError::Failed)));
}

#[test]
fn session_with_pinned_keys_refuses_a_peer_at_an_address_with_no_pin() {
    let (k1, k2, k3) = (identity(), identity(), identity());
    // Node 3 proves its own key, but nothing is pinned for its address.
    let mut a = Session::initiator_with(node(3), &keyed(&k3, &[(node(2), &k2)])).expect("noise");
    let mut b = Session::responder_with(node(2), &keyed(&k2, &[(node(1), &k1)])).expect("noise");
    let err = pump(&mut a, &mut b).expect_err("refused");
    assert!(
        matches!(err, SessionError::Unpinned { peer } if peer == node(3)),
        "{err:?}"
    );
    assert!(err.to_string().contains("no pinned key"), "{err}");
    // Empty pins admit nobody.
    let mut a = Session::initiator_with(node(1), &keyed(&k1, &[])).expect("noise");
    let mut b = Session::responder_with(node(2), &keyed(&k2, &[(node(1), &k1)])).expect("noise");
    let err = pump(&mut a, &mut b).expect_err("refused");
    assert!(
        matches!(err, SessionError::Unpinned { peer } if peer == node(2)),
        "{err:?}"
    );
}

#[test]
fn session_keys_keep_and_print_as_the_rule_says() {
    let k = identity();
    let kept = Identity::from_private_key(k.private_key()).expect("x25519");
    assert_eq!(kept.public_key(), k.public_key());
    let text = k.public_key().to_string();
    assert_eq!(text.len(), 64);
    // Only the public key is ever printed.
    assert_eq!(format!("{k:?}"), format!("Identity(public: {text})"));
    let creds = Credentials::new(secret(5)).identity(k.clone());
    let private: String = k.private_key().iter().map(|b| format!("{b:02x}")).collect();
    assert!(!format!("{creds:?}").contains(&private), "{creds:?}");
    assert!(format!("{creds:?}").contains(&text), "{creds:?}");
    assert_eq!(
        format!("{:?}", k.public_key()),
        format!("PublicKey({text})")
    );
    // Text: either case, a line read from a file.
    assert_eq!(text.parse::<PublicKey>(), Ok(k.public_key()));
    assert_eq!(text.to_uppercase().parse::<PublicKey>(), Ok(k.public_key()));
    assert_eq!(
        format!("  {text}\n").parse::<PublicKey>(),
        Ok(k.public_key())
    );
    assert_eq!("ab".parse::<PublicKey>(), Err(KeyError::Length(2)));
    let mut bad = text.clone();
    bad.replace_range(10..11, "g");
    assert_eq!(bad.parse::<PublicKey>(), Err(KeyError::NotHex(10)));
    assert_eq!(
        "é".repeat(32).parse::<PublicKey>(),
        Err(KeyError::NotHex(0))
    );
    // Keys of low order prove nothing: never pinned.
    assert_eq!("0".repeat(64).parse::<PublicKey>(), Err(KeyError::LowOrder));
    let mut one = [0; 32];
    one[0] = 1;
    assert_eq!(PublicKey::from_bytes(one), Err(KeyError::LowOrder));
    assert_eq!(
        PublicKey::from_bytes(*k.public_key().as_bytes()),
        Ok(k.public_key())
    );
    // Several keys per address; a key pinned twice is one pin.
    let mut pins = Pins::new();
    let at = node(1).addr;
    assert!(pins.insert(at, k.public_key()));
    assert!(!pins.insert(at, kept.public_key()), "the same key");
    let other = identity().public_key();
    assert!(pins.insert(at, other));
    assert_eq!(pins.keys(&at), [k.public_key(), other]);
    assert_eq!(pins.len(), 2);
    assert!(pins.remove(&at, &k.public_key()) && !pins.remove(&at, &k.public_key()));
    assert!(pins.remove(&at, &other) && pins.is_empty() && pins.keys(&at).is_empty());
}

/// A key changed without a gap: with the old and the new key pinned for
/// a node's address, either admits it; unpinned, the old one is refused.
#[test]
fn session_with_pinned_keys_admits_any_key_pinned_for_the_address() {
    let (old, new, k2) = (identity(), identity(), identity());
    let both = [(node(1), &old), (node(1), &new), (node(2), &k2)];
    for k1 in [&old, &new] {
        let mut a = Session::initiator_with(node(1), &keyed(k1, &both)).expect("noise");
        let mut b = Session::responder_with(node(2), &keyed(&k2, &both)).expect("noise");
        pump(&mut a, &mut b).expect("either key admits");
        assert_eq!(b.peer(), Some(node(1)));
        // What each proved: what to pin for it.
        assert_eq!(b.peer_key(), Some(k1.public_key()));
        assert_eq!(a.peer_key(), Some(k2.public_key()));
    }
    let after = [(node(1), &new), (node(2), &k2)];
    let mut a = Session::initiator_with(node(1), &keyed(&old, &after)).expect("noise");
    let mut b = Session::responder_with(node(2), &keyed(&k2, &after)).expect("noise");
    let err = pump(&mut a, &mut b).expect_err("refused");
    assert!(
        matches!(err, SessionError::WrongKey { peer } if peer == node(1)),
        "{err:?}"
    );
}

proptest! {
    #![proptest_config(common::cases(1_000))]

    /// Garbage before or after the handshake: a typed error or nothing,
    /// never a panic, never a frame.
    #[test]
    fn session_garbage_is_refused_typed_and_never_panics(
        junk in proptest::collection::vec(any::<u8>(), 0..300),
        after_handshake in any::<bool>(),
    ) {
        let (mut a, mut b) = sessions(9);
        if after_handshake {
            pump(&mut a, &mut b).expect("handshake");
        }
        match b.receive(&junk) {
            Ok(frames) => prop_assert!(frames.is_empty()),
            Err(e) => prop_assert!(!matches!(e, SessionError::Failed), "{e:?}"),
        }
    }
}

/// The three messages of a clean handshake between `i` and `r`.
fn transcript(i: NodeId, r: NodeId) -> Vec<Vec<u8>> {
    let mut a = Session::initiator(i, &secret(5)).expect("noise");
    let mut b = Session::responder(r, &secret(5)).expect("noise");
    let (mut sender, mut reader) = (&mut a, &mut b);
    let mut out = Vec::new();
    for _ in 0..3 {
        let msg = sender.take_output();
        reader.receive(&msg).expect("a clean message");
        out.push(msg);
        std::mem::swap(&mut sender, &mut reader);
    }
    out
}

/// How a handshake message is spoiled on its way.
#[derive(Clone, Debug)]
enum Spoil {
    /// One bit flipped at this offset (modulo the length).
    Flip(usize, u8),
    /// Cut to this many bytes (modulo the length).
    Cut(usize),
    /// Bytes appended.
    Append(Vec<u8>),
    /// Replaced by the same message of another handshake (a replay).
    Replay,
}

fn spoil() -> impl Strategy<Value = Spoil> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Spoil::Flip(at, bit)),
        any::<usize>().prop_map(Spoil::Cut),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(Spoil::Append),
        Just(Spoil::Replay),
    ]
}

proptest! {
    #![proptest_config(common::cases(10_000))]

    /// Structured fuzzing of the handshake: message 1, 2 or 3 of a real
    /// handshake spoiled on its way (a bit flipped, cut, extended, or
    /// replayed from another handshake). Never a panic; the side that
    /// reads it either refuses it with a typed error, or (a cut message
    /// is only incomplete) waits; no session is ever established with a
    /// spoiled message, and no frame comes out of one.
    #[test]
    fn session_a_spoiled_handshake_message_is_refused_typed_and_never_panics(
        step in 0usize..3,
        how in spoil(),
    ) {
        let (mut a, mut b) = sessions(5);
        // The real handshake, up to the message to spoil.
        let (mut sender, mut reader) = (&mut a, &mut b);
        let mut msg = sender.take_output();
        for _ in 0..step {
            reader.receive(&msg).expect("a clean message");
            std::mem::swap(&mut sender, &mut reader);
            msg = sender.take_output();
        }
        prop_assume!(!msg.is_empty());
        let spoiled = match how {
            Spoil::Flip(at, bit) => {
                let mut m = msg.clone();
                let i = at % m.len();
                m[i] ^= 1 << bit;
                m
            }
            Spoil::Cut(n) => msg[..n % msg.len()].to_vec(),
            Spoil::Append(junk) => {
                let mut m = msg.clone();
                m.extend(junk);
                m
            }
            Spoil::Replay => transcript(node(3), node(4))[step].clone(),
        };
        prop_assume!(spoiled != msg);
        match reader.receive(&spoiled) {
            Ok(frames) => {
                prop_assert!(frames.is_empty(), "no frame from a handshake");
                // Only an incomplete message may be taken without an
                // error, and it establishes nothing.
                prop_assert!(!reader.is_established() || spoiled.starts_with(&msg));
            }
            Err(e) => prop_assert!(!matches!(e, SessionError::Failed), "{e:?}"),
        }
    }
}

/// Rules 110 and 116: an authenticated peer that is buggy (or hostile)
/// sends, inside good Noise messages, frame streams made from real
/// frames with bytes flipped, cut or inserted, and random bytes, in
/// random pieces: from a fixed seed, 3,000 streams. Each is taken as
/// whole frames or refused typed, never a panic; a refused session takes
/// nothing more; what waits undecoded stays within one frame and one
/// Noise message.
#[test]
fn session_mutated_frames_from_an_authenticated_peer_are_refused_typed_and_never_panic() {
    use rand_core::{Rng, SeedableRng};
    use stakplane::cluster::{WireError, MAX_FRAME};
    let mut stream = Vec::new();
    for f in [
        Frame::Hello {
            version: WIRE_VERSION,
            node: node(1),
        },
        Frame::Gossip(vec![1, 2, 3]),
        Frame::Send {
            to: 42,
            from: None,
            payload: vec![0xAB; 70],
            dst: node(2),
        },
        Frame::Lookup {
            name: "a name".into(),
            tag: 9,
            from: node(1),
            dst: node(2),
        },
    ] {
        f.encode_into(&mut stream, MAX_FRAME).expect("encodes");
    }
    let mut rng = rand_xorshift::XorShiftRng::seed_from_u64(0x5E55);
    let mut below = |n: usize| usize::try_from(rng.next_u64() % n.max(1) as u64).unwrap_or(0);
    let (mut refused, mut taken) = (0, 0);
    for case in 0..3_000 {
        let (mut a, mut b) = established(9);
        let mut bytes = if case % 5 == 0 {
            (0..below(200)).map(|_| below(256) as u8).collect()
        } else {
            stream.clone()
        };
        for _ in 0..below(4) {
            if !bytes.is_empty() {
                let at = below(bytes.len());
                bytes[at] ^= 1 << below(8);
            }
        }
        match below(3) {
            0 => bytes.truncate(below(bytes.len() + 1)),
            1 => {
                let at = below(bytes.len() + 1);
                let junk: Vec<u8> = (0..below(8)).map(|_| below(256) as u8).collect();
                bytes.splice(at..at, junk);
            }
            _ => {}
        }
        let mut rest = &bytes[..];
        let mut failed = false;
        while !rest.is_empty() {
            let (piece, more) = rest.split_at(1 + below(rest.len()));
            rest = more;
            a.send_encoded(piece).expect("encrypts");
            match b.receive(&a.take_output()) {
                Ok(frames) => {
                    assert!(!failed, "case {case}: a refused session took more");
                    for f in frames {
                        let mut out = Vec::new();
                        assert!(f.encode_into(&mut out, MAX_FRAME).is_ok());
                        taken += 1;
                    }
                }
                Err(SessionError::Failed) => assert!(failed, "case {case}"),
                Err(SessionError::Wire(
                    WireError::TooLarge { .. }
                    | WireError::Malformed(_)
                    | WireError::Trailing { .. }
                    | WireError::Truncated { .. },
                )) if !failed => {
                    failed = true;
                    refused += 1;
                }
                Err(e) => panic!("case {case}: untyped or unexpected {e:?}"),
            }
            assert!(b.pending() <= MAX_FRAME + 4 + 65535, "case {case}");
        }
    }
    // Both ways out are taken, many times.
    assert!(
        refused > 300 && taken > 300,
        "{refused} refused, {taken} taken"
    );
}
