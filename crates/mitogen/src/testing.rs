//! Hooks for the project's own tests and fuzzers; not a stable API.
//!
//! They let a test play a hostile context (writing arbitrary bytes where
//! frames are expected) and let a fuzzer drive the frame decoder and the
//! router's intake without processes.

use crate::frame::DEFAULT_MAX_MESSAGE_SIZE;
use crate::message::Message;
use crate::router::{Core, Router};
use crate::stream::{FrameReader, Stream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, OnceLock};

/// Writes `bytes` verbatim onto this context's link to its parent, as a
/// compromised child could. Fails in the master.
pub fn write_raw_to_parent(router: &Router, bytes: &[u8]) -> std::io::Result<()> {
    match router.core().parent_stream() {
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
/// 1, and routes every frame it yields through a router (id 0) that knows
/// that child: the path hostile input takes. Must never panic.
pub fn fuzz_intake(data: &[u8]) {
    static INTAKE: OnceLock<Option<Intake>> = OnceLock::new();
    let Some(intake) = INTAKE.get_or_init(|| {
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
        core.add_route(1, &stream);
        Some(Intake {
            core,
            stream,
            _router: router,
        })
    }) else {
        return;
    };
    let mut reader = FrameReader::new(1 << 20);
    reader.push(data);
    let mut frames = Vec::new();
    let _ = reader.drain(&mut |h, body| frames.push(Message::from_frame(h, body)));
    for m in frames {
        intake.core.route_in(&intake.stream, m);
    }
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
        };
        let mut v = h.encode().to_vec();
        v.extend_from_slice(body);
        v
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
}
