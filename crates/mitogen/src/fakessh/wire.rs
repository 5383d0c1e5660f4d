//! What the fake `ssh` and its master say over the rendezvous socket.
//!
//! Why so little: the shim hands its standard input, output and error to
//! the master with `SCM_RIGHTS` beside its request, and then only waits
//! for the exit status. The master pumps the tool's bytes itself, so no
//! data crosses this socket, the shim needs no buffers, and end of file
//! and back-pressure on the tool's pipes are the kernel's own.
//!
//! ```text
//! shim → master   "MFS1" u32-be length, MessagePack Request  + SCM_RIGHTS [0, 1, 2]
//! master → shim   "MFS1" u32-be length, MessagePack Status
//! ```
//!
//! The master reads the request with a deadline and a size limit, and
//! trusts nothing in it before the peer's credentials and the token were
//! checked.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// First bytes of every record.
const MAGIC: &[u8; 4] = b"MFS1";

/// Largest record accepted (a command line is at most `ARG_MAX`, 2 MiB
/// on Linux, plus variables).
pub(crate) const MAX_RECORD: usize = 4 << 20;

/// The shim's request.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    /// The run's token (from the environment the master set).
    pub token: String,
    /// The remote command (ssh's words joined by spaces).
    pub command: ByteBuf,
    /// The command is a subsystem name.
    pub subsystem: bool,
    /// Variables to set for the command (`SendEnv`, `SetEnv`).
    pub env: Vec<(ByteBuf, ByteBuf)>,
}

/// How the remote command ended, as the shim reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum Status {
    /// It exited with this code.
    Exited(i32),
    /// A signal ended it.
    Signaled(i32),
    /// It could not be run, or the run was stopped: ssh's 255.
    Failed(String),
}

fn record(value: &impl Serialize) -> io::Result<Vec<u8>> {
    let body = rmp_serde::to_vec(value).map_err(io::Error::other)?;
    if body.len() > MAX_RECORD {
        return Err(io::Error::other("record too large"));
    }
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

fn parse_header(h: &[u8; 8]) -> io::Result<usize> {
    if &h[..4] != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a fakessh peer",
        ));
    }
    let n = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
    if n > MAX_RECORD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a record of {n} bytes (at most {MAX_RECORD})"),
        ));
    }
    Ok(n)
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> io::Result<T> {
    rmp_serde::from_slice(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Sends `req` with `fds` attached to its first bytes.
pub(crate) fn send_request(sock: &mut UnixStream, req: &Request, fds: &[RawFd]) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let rec = record(req)?;
    let cmsg = [ControlMessage::ScmRights(fds)];
    let sent = sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(&rec)],
        &cmsg,
        MsgFlags::empty(),
        None,
    )
    .map_err(io::Error::from)?;
    sock.write_all(&rec[sent..])
}

/// Receives a request and the descriptors sent with it. The socket's
/// read timeout bounds every read.
pub(crate) fn recv_request(sock: &mut UnixStream) -> io::Result<(Request, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut header = [0u8; 8];
    let mut fds = Vec::new();
    let got = {
        let mut iov = [IoSliceMut::new(&mut header)];
        let mut space = nix::cmsg_space!([RawFd; 3]);
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: the kernel just gave us this descriptor; nothing
                    // else owns it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "more descriptors than stdin, stdout and stderr",
            ));
        }
        msg.bytes
    };
    if got == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer closed at once",
        ));
    }
    sock.read_exact(&mut header[got..])?;
    let n = parse_header(&header)?;
    let mut body = vec![0u8; n];
    sock.read_exact(&mut body)?;
    Ok((decode(&body)?, fds))
}

/// Sends the final status.
pub(crate) fn send_status(sock: &mut UnixStream, status: &Status) -> io::Result<()> {
    sock.write_all(&record(status)?)
}

/// Reads the final status.
pub(crate) fn recv_status(sock: &mut UnixStream) -> io::Result<Status> {
    let mut header = [0u8; 8];
    sock.read_exact(&mut header)?;
    let n = parse_header(&header)?;
    let mut body = vec![0u8; n];
    sock.read_exact(&mut body)?;
    decode(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn request_with_descriptors_and_status_round_trip() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        let req = Request {
            token: "t".into(),
            command: ByteBuf::from(b"echo hi".to_vec()),
            subsystem: false,
            env: vec![(ByteBuf::from(b"A".to_vec()), ByteBuf::from(b"1".to_vec()))],
        };
        send_request(&mut a, &req, &[r.as_raw_fd(), w.as_raw_fd()]).unwrap();
        let (got, fds) = recv_request(&mut b).unwrap();
        assert_eq!(got.command.as_slice(), b"echo hi");
        assert_eq!(fds.len(), 2);
        // The received write end writes into the original pipe.
        nix::unistd::write(fds[1].as_fd(), b"x").unwrap();
        let mut buf = [0u8; 1];
        nix::unistd::read(r.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf, b"x");
        send_status(&mut b, &Status::Signaled(9)).unwrap();
        assert_eq!(recv_status(&mut a).unwrap(), Status::Signaled(9));
    }

    #[test]
    fn garbage_and_oversized_records_are_refused() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(b"GET / HTTP/1.0\r\n").unwrap();
        assert!(recv_request(&mut b).is_err());
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(b"MFS1\xff\xff\xff\xff").unwrap();
        assert!(recv_status(&mut b).is_err());
        let (a, mut b) = UnixStream::pair().unwrap();
        drop(a);
        assert!(recv_request(&mut b).is_err());
    }
}
