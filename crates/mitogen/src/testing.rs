//! Hooks for the project's own tests and fuzzers; not a stable API, and
//! only built with the `testing` cargo feature.
//!
//! They let a test play a hostile context (writing arbitrary bytes where
//! frames are expected) and let a fuzzer drive the frame decoder and the
//! router's intake without processes. [`wire`] exposes the frame format,
//! which is otherwise private: users never build frames.

/// The frame format: header, magic, limits and reserved handles.
pub mod wire {
    pub use crate::frame::{
        handle, Encoding, FrameError, Header, DEFAULT_MAX_MESSAGE_SIZE, FRAGMENT, HEADER_LEN, LAST,
        MAGIC, PROTOCOL_VERSION,
    };
}

use crate::frame::DEFAULT_MAX_MESSAGE_SIZE;
use crate::link::{FrameReader, Stream};
use crate::message::Message;
use crate::router::{Core, Router};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, OnceLock};

/// Writes `bytes` verbatim onto this context's link to its parent, as a
/// compromised child could. Fails in the master.
pub fn write_raw_to_parent(router: &Router, bytes: &[u8]) -> std::io::Result<()> {
    match router.core().table.parent_stream() {
        Some(s) => s.write_raw(bytes),
        None => Err(std::io::Error::other("no parent: this is the master")),
    }
}

struct Intake {
    core: Arc<Core>,
    stream: Arc<Stream>,
    _router: Router,
}

/// Feeds `data` to a frame decoder as if it arrived from a child with id
/// 1 (behind which ids 2..=64 were allocated), and routes every frame it yields through a router (id 0) that knows
/// that child: the path hostile input takes. Must never panic.
pub fn fuzz_intake(data: &[u8]) {
    let Some(intake) = intake() else { return };
    let mut reader = FrameReader::new(1 << 20);
    reader.push(data);
    let mut frames = Vec::new();
    let _ = reader.drain(&mut |h, body| frames.push(Message::from_frame(h, body)));
    for m in frames {
        intake.core.route_in(&intake.stream, m);
    }
}

/// The router (and fake child stream) `fuzz_intake` feeds, made once.
fn intake() -> Option<&'static Intake> {
    static INTAKE: OnceLock<Option<Intake>> = OnceLock::new();
    INTAKE
        .get_or_init(|| {
            let router = Router::new().ok()?;
            let (ours, theirs) = UnixStream::pair().ok()?;
            // Drain what the router answers (dead messages), so it never blocks.
            std::thread::spawn(move || {
                use std::io::Read;
                let mut theirs = theirs;
                let mut buf = [0u8; 65536];
                while theirs.read(&mut buf).is_ok_and(|n| n > 0) {}
            });
            let stream = Stream::new(
                "fuzz".into(),
                1,
                false,
                OwnedFd::from(ours),
                None,
                DEFAULT_MAX_MESSAGE_SIZE,
                None,
            )
            .ok()?;
            let stream = Arc::new(stream);
            let core = router.core().clone();
            core.table.add_route(1, &stream);
            // Ids 2..=64 are handed out behind the fake child, so
            // announcements of them are accepted and routing past them is
            // exercised.
            while core
                .table
                .allocate_behind(&stream)
                .is_some_and(|id| id < 64)
            {}
            Some(Intake {
                core,
                stream,
                _router: router,
            })
        })
        .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{handle, Encoding, Header};

    fn frame(handle: u32, src: u32, auth: u32, body: &[u8]) -> Vec<u8> {
        let h = Header {
            encoding: Encoding::MsgPack,
            dst_id: 0,
            src_id: src,
            auth_id: auth,
            handle,
            reply_to: 7,
            length: body.len() as u32,
            ..Header::default()
        };
        let mut v = h.encode().to_vec();
        v.extend_from_slice(body);
        v
    }

    /// Regression (found by the intake fuzzer): a grandchild could
    /// withdraw the route to its own parent, cutting off the subtree.
    #[test]
    fn only_a_direct_child_withdraws_routes() {
        let add5 =
            crate::message::to_msgpack(&crate::router::control::RouteNote::new(5, "x")).unwrap();
        fuzz_intake(&frame(handle::ADD_ROUTE, 1, 1, &add5));
        let core = &intake().unwrap().core;
        assert!(core.is_connected(5));
        // An id never allocated behind this child: refused. (Not 65: other
        // tests in this process send ALLOCATE_ID through the same child.)
        let add65 =
            crate::message::to_msgpack(&crate::router::control::RouteNote::new(1_000_000, "y"))
                .unwrap();
        fuzz_intake(&frame(handle::ADD_ROUTE, 1, 1, &add65));
        assert!(
            !core.is_connected(1_000_000),
            "an unallocated id was announced"
        );
        let del1 = crate::message::to_msgpack(&(1u32, "why")).unwrap();
        fuzz_intake(&frame(handle::DEL_ROUTE, 5, 5, &del1));
        assert!(
            core.is_connected(1),
            "a grandchild removed its parent's route"
        );
        let del5 = crate::message::to_msgpack(&(5u32, "gone")).unwrap();
        fuzz_intake(&frame(handle::DEL_ROUTE, 1, 1, &del5));
        assert!(
            !core.is_connected(5),
            "the direct child could not withdraw 5"
        );
        assert!(core.is_connected(1));
    }

    #[test]
    fn hostile_input_does_not_panic() {
        fuzz_intake(b"");
        fuzz_intake(b"garbage that is not a frame at all, 32 bytes or more");
        for h in [
            handle::CALL_FUNCTION,
            handle::ADD_ROUTE,
            handle::DEL_ROUTE,
            handle::ALLOCATE_ID,
            handle::SHUTDOWN,
            handle::FORWARD_LOG,
            handle::HANDSHAKE,
            5000,
        ] {
            for body in [
                &b""[..],
                b"\x93\xc0\xa1x\x90",
                b"\xff\xff\xff",
                b"\x92\x01\xa3abc",
            ] {
                fuzz_intake(&frame(h, 1, 1, body));
                fuzz_intake(&frame(h, 1, 0, body)); // forged auth_id
                fuzz_intake(&frame(h, 9, 9, body)); // src_id not behind this stream
            }
        }
    }

    /// Before: a message from the parent for an id this context has no
    /// route to was dropped ("it would loop back"); its sender waited
    /// forever. It is answered with a dead message, as everywhere else.
    #[test]
    fn a_message_from_the_parent_to_nowhere_is_answered() {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let broker = crate::Broker::new().unwrap();
        let core = Core::new(broker.handle(), false, 5, vec![0], None);
        let (ours, theirs) = UnixStream::pair().unwrap();
        let parent = Stream::new(
            "parent".into(),
            0,
            true,
            OwnedFd::from(ours),
            None,
            1 << 20,
            None,
        )
        .unwrap();
        let parent = Arc::new(parent);
        core.attach(parent.clone(), FrameReader::new(1 << 20));
        let mut m = Message::raw(b"hello".to_vec()).to(77, 5000);
        (m.src_id, m.auth_id, m.reply_to) = (0, 0, 1234);
        core.route_in(&parent, m);
        let mut theirs = theirs;
        theirs
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = theirs.read(&mut buf).expect("an answer within 5 s");
        let h = Header::decode(&buf[..n], 1 << 20).unwrap().unwrap();
        assert_eq!((h.dst_id, h.handle, h.encoding), (0, 1234, Encoding::Dead));
        let why = String::from_utf8_lossy(&buf[32..n]).into_owned();
        assert!(why.contains("no route"), "{why}");
        let _ = theirs.as_raw_fd();
        broker.shutdown();
        broker.join();
    }
}
