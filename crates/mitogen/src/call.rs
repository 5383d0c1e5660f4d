//! Remote functions: the link-time registry filled by `#[mitogen::remote]`,
//! the [`RemoteFn`] trait that makes calls type-checked, and the call
//! payload format.
//!
//! A call's payload is the MessagePack array `[chain, name, args]`, where
//! `chain` is nil or a string (see [`crate::CallChain`]), `name` is the
//! function's path in the program (`module_path!()::name`) and `args` the
//! argument tuple. Because both ends run the same binary, the name alone
//! identifies the code; only functions marked `#[mitogen::remote]` are in
//! the registry, so nothing else can be called.

use crate::error::CallError;
use crate::link::memory::HugeWriter;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::OnceLock;

/// A function exposed with `#[mitogen::remote]`, as a type.
///
/// The attribute implements this on a marker type named like the function,
/// living in the type namespace beside it; that is what
/// `ctx.call::<disk_free>(args)` and `mitogen::call!(ctx, disk_free(args))`
/// name. `Args` is the tuple of the sent parameters (injected `&Router` and
/// `&ExternalContext` parameters excluded); `Output` is the success type.
pub trait RemoteFn {
    /// Tuple of the parameters sent over the wire.
    type Args: Serialize;
    /// What a successful call returns.
    type Output: DeserializeOwned;
    /// Full path of the function, the name it is called by.
    const NAME: &'static str;
}

/// Invocation environment handed to generated code.
#[derive(Debug)]
pub struct CallEnv<'a> {
    /// Router of the context running the call.
    pub router: &'a crate::Router,
    /// The running context.
    pub econtext: &'a crate::ExternalContext,
}

/// What `#[mitogen::remote]` generates to run a call: given the call's
/// payload (owned, so a large byte string in it can become an argument
/// without a copy) and where the arguments start in it, returns the
/// result, encoded only as it is sent (`streamed.rs`).
pub type Invoke = fn(&CallEnv<'_>, Vec<u8>, usize) -> Result<Box<dyn Output>, CallError>;

/// A function's result, encoded where it is sent: a large byte string in
/// it goes to the link from the value itself (generated code).
pub trait Output {
    /// Writes the result in MessagePack (structs as maps) to `w`.
    fn encode(&self, w: &mut dyn std::io::Write) -> Result<(), CallError>;
}

/// A result value as an [`Output`] (generated code).
#[derive(Debug)]
pub struct OutputOf<T>(pub T);

impl<T: Serialize> Output for OutputOf<T> {
    fn encode(&self, w: &mut dyn std::io::Write) -> Result<(), CallError> {
        self.0
            .serialize(&mut rmp_serde::Serializer::new(w).with_struct_map())
            .map_err(|e| CallError::new("mitogen::EncodeError", e.to_string()))
    }
}

/// A registry entry, written by `#[mitogen::remote]`.
pub struct Entry {
    /// Full path of the function.
    pub name: &'static str,
    /// Decodes the arguments (the call payload and where they start in
    /// it), runs the function, encodes the result.
    pub invoke: Invoke,
    /// `#[mitogen::remote(concurrent)]`: runs on the context's worker pool
    /// (`pool.rs`) instead of in arrival order on its main thread.
    pub concurrent: bool,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.concurrent { ", concurrent" } else { "" };
        write!(f, "Entry({}{how})", self.name)
    }
}

/// Every remote function linked into this binary.
#[linkme::distributed_slice]
pub static REMOTE_FNS: [Entry];

fn registry() -> &'static HashMap<&'static str, &'static Entry> {
    static MAP: OnceLock<HashMap<&'static str, &'static Entry>> = OnceLock::new();
    MAP.get_or_init(|| REMOTE_FNS.iter().map(|e| (e.name, e)).collect())
}

/// Finds a remote function by name.
/// Name under which [`crate::CallChain::reset`] asks a context to forget a
/// chain's failure (answered by the dispatcher itself, not a registered
/// function).
pub(crate) const FORGET_CHAIN: &str = "mitogen::forget_chain";

pub(crate) fn lookup(name: &str) -> Option<&'static Entry> {
    registry().get(name).copied()
}

/// Decodes a call's argument tuple (generated code).
pub fn decode_args<A: DeserializeOwned>(name: &str, bytes: &[u8]) -> Result<A, CallError> {
    rmp_serde::from_slice(bytes).map_err(|e| {
        CallError::new(
            "mitogen::DecodeError",
            format!("cannot decode the arguments of {name}: {e}"),
        )
    })
}

/// Appends `value` in MessagePack (structs as maps), as
/// `message::encode_into` does, into a buffer backed by huge pages once
/// large: a large argument or result is written to fresh memory, whose
/// page faults cost more than the copy (`link/memory.rs`).
fn encode_into<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) -> Result<(), CallError> {
    value
        .serialize(&mut rmp_serde::Serializer::new(HugeWriter(buf)).with_struct_map())
        .map_err(|e| CallError::new("mitogen::EncodeError", e.to_string()))
}

/// Decodes a call's argument tuple from `payload[at..]`, owning the
/// payload: a large byte string ending it becomes the argument's buffer
/// instead of being copied (`owned.rs`; generated code).
pub fn decode_args_owned<A: DeserializeOwned>(
    name: &str,
    payload: Vec<u8>,
    at: usize,
) -> Result<A, CallError> {
    crate::owned::from_msgpack(payload, at).map_err(|e| {
        CallError::new(
            "mitogen::DecodeError",
            format!("cannot decode the arguments of {name}: {e}"),
        )
    })
}

/// Encodes a call's result (generated code).
pub fn encode_output<T: Serialize>(value: &T) -> Result<Vec<u8>, CallError> {
    let mut buf = Vec::new();
    // Sent to the caller: for it, the remote side failed.
    encode_into(&mut buf, value)?;
    Ok(buf)
}

/// Turns what a remote function returned into its success value or a
/// [`CallError`] (generated code uses this for functions returning a
/// `Result`).
pub trait IntoRemoteResult {
    /// The success type.
    type Ok;
    /// Splits into success or a captured error.
    fn into_remote(self) -> Result<Self::Ok, CallError>;
}

impl<T, E> IntoRemoteResult for Result<T, E>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Ok = T;
    fn into_remote(self) -> Result<T, CallError> {
        self.map_err(|e| {
            let name = std::any::type_name::<E>();
            let boxed: Box<dyn std::error::Error + Send + Sync> = e.into();
            CallError::from_error(name, &*boxed)
        })
    }
}

/// Builds the payload of a call.
#[cfg(test)]
pub(crate) fn encode_call<A: Serialize + ?Sized>(
    chain: Option<&str>,
    name: &str,
    args: &A,
) -> crate::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(32 + name.len());
    encode_call_into(HugeWriter(&mut buf), chain, name, args)?;
    Ok(buf)
}

/// Writes the payload of a call to `w` (which may send it as it goes:
/// `streamed.rs`).
pub(crate) fn encode_call_into<W: std::io::Write, A: Serialize + ?Sized>(
    mut w: W,
    chain: Option<&str>,
    name: &str,
    args: &A,
) -> crate::Result<()> {
    // Encoding here failed: a local error, not the remote side's.
    let fail = |e: &dyn std::fmt::Display| {
        crate::Error::Codec(crate::error::CodecError::new(
            crate::error::CodecOp::Encode,
            std::any::type_name::<A>(),
            e.to_string(),
        ))
    };
    rmp::encode::write_array_len(&mut w, 3).map_err(|e| fail(&e))?;
    match chain {
        Some(c) => rmp::encode::write_str(&mut w, c).map_err(|e| fail(&e))?,
        None => rmp::encode::write_nil(&mut w).map_err(|e| fail(&e))?,
    }
    rmp::encode::write_str(&mut w, name).map_err(|e| fail(&e))?;
    args.serialize(&mut rmp_serde::Serializer::new(w).with_struct_map())
        .map_err(|e| fail(&e))
}

/// A decoded call: chain, function name, and the undecoded argument bytes.
pub(crate) struct CallParts<'a> {
    pub(crate) chain: Option<&'a str>,
    pub(crate) name: &'a str,
    pub(crate) args: &'a [u8],
}

fn bad(what: &str) -> CallError {
    CallError::new("mitogen::DecodeError", format!("malformed call: {what}"))
}

fn read_str<'a>(rd: &mut &'a [u8]) -> Result<&'a str, CallError> {
    let n = rmp::decode::read_str_len(rd).map_err(|_| bad("expected a string"))? as usize;
    if rd.len() < n {
        return Err(bad("truncated string"));
    }
    let s = std::str::from_utf8(&rd[..n]).map_err(|_| bad("string is not UTF-8"))?;
    *rd = &rd[n..];
    Ok(s)
}

/// Splits a call payload without decoding the arguments.
pub(crate) fn decode_call(data: &[u8]) -> Result<CallParts<'_>, CallError> {
    let mut rd = data;
    let n = rmp::decode::read_array_len(&mut rd).map_err(|_| bad("expected an array"))?;
    if n != 3 {
        return Err(bad("expected 3 elements"));
    }
    let chain = if rd.first() == Some(&0xc0) {
        rd = &rd[1..];
        None
    } else {
        Some(read_str(&mut rd)?)
    };
    let name = read_str(&mut rd)?;
    Ok(CallParts {
        chain,
        name,
        args: rd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_payload_round_trip() {
        let p = encode_call(Some("c1"), "a::b", &(1u8, "x")).unwrap();
        let c = decode_call(&p).unwrap();
        assert_eq!(c.chain, Some("c1"));
        assert_eq!(c.name, "a::b");
        let args: (u8, String) = decode_args("a::b", c.args).unwrap();
        assert_eq!(args, (1, "x".into()));
        let p = encode_call(None, "f", &()).unwrap();
        assert_eq!(decode_call(&p).unwrap().chain, None);
    }

    #[test]
    fn malformed_calls_are_errors() {
        for junk in [
            &b""[..],
            b"\x93",
            b"\x93\xc0",
            b"\x93\xa5ab",
            b"\x92\xc0\xa1a",
            b"\xff",
        ] {
            assert!(decode_call(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn error_results_keep_type_name() {
        let r: Result<u8, std::io::Error> = Err(std::io::Error::other("bad"));
        let e = r.into_remote().unwrap_err();
        assert_eq!(e.type_name(), "std::io::error::Error");
        assert_eq!(e.message(), "bad");
    }
}
