//! Starting a context from another one (`.via(&ctx)`): the intermediate
//! runs the connection itself, with its own copy of the agent, and
//! announces the new route up the tree before it answers.
//!
//! A method's own parameters travel in the call (its tag and its spec,
//! see `method.rs`), passwords
//! included (as call payload, which is never logged). The intermediate's
//! typed failures (a refused password, a host key) come back as the same
//! [`Error`] variants (a timeout too), so `via` changes nothing for the
//! caller's `match`. The caller waits for the answer in short slices,
//! checking its own connect's cancellation: its broker's shutdown ends the
//! wait at once (the intermediate's own shutdown ends its connect).

use crate::connect::inflight::Flight;
use crate::connect::Options;
use crate::context::Context;
use crate::error::{
    Error, HostKeyError, PasswordError, Result, StreamError, TargetError, TargetErrorKind,
    TimeoutError,
};
use crate::router::Core;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The relay's name (`registry::connect_via`): called by name, so that
/// this module does not depend on the list of methods.
pub(crate) const RELAY: &str = "mitogen::connect::registry::connect_via";

/// What the intermediate needs to start the context: the method's tag
/// and its parameters (MessagePack), the new context's id and options.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ViaSpec {
    pub(crate) tag: String,
    #[serde(with = "serde_bytes")]
    pub(crate) params: Vec<u8>,
    pub(crate) id: u32,
    pub(crate) opts: Options,
}

/// The intermediate's answer: a plain value (not a `Result`), so the kind
/// of failure survives the trip.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ViaReply {
    Up {
        name: String,
        uploaded: u64,
    },
    Password(String),
    HostKey {
        message: String,
        changed: bool,
    },
    Timeout {
        what: String,
        after: std::time::Duration,
    },
    Stream(String),
    Target {
        kind: TargetErrorKind,
        message: String,
    },
    Other(String),
}

/// The intermediate's answer for a connect's outcome.
pub(crate) fn reply(r: Result<Context>) -> ViaReply {
    match r {
        Ok(ctx) => ViaReply::Up {
            name: ctx.name().to_string(),
            uploaded: ctx.agent_upload_bytes().unwrap_or(0),
        },
        Err(Error::Password(e)) => ViaReply::Password(e.message().to_string()),
        Err(Error::HostKey(e)) => ViaReply::HostKey {
            message: e.message().to_string(),
            changed: e.changed(),
        },
        Err(Error::Timeout(e)) => ViaReply::Timeout {
            what: e.what().to_string(),
            after: e.after(),
        },
        Err(Error::Stream(e)) => ViaReply::Stream(e.message().to_string()),
        Err(Error::Target(e)) => ViaReply::Target {
            kind: e.kind(),
            message: e.message().to_string(),
        },
        Err(e) => ViaReply::Other(e.to_string()),
    }
}

/// How often a caller waiting for an intermediate looks at its own
/// connect's cancellation.
const SLICE: std::time::Duration = std::time::Duration::from_millis(100);

/// Asks `via` to start a context by the method `tag` with parameters
/// `method`, and returns it.
pub(crate) fn connect(
    core: &Arc<Core>,
    via: &Context,
    tag: &str,
    method: &impl Serialize,
    opts: &Options,
) -> Result<Context> {
    let flight = Flight::begin(&core.broker, &core.connects, opts.connect_timeout)?;
    let id = match core.table.stream_for(via.context_id()) {
        Some(branch) if core.id == crate::identity::MASTER_ID => {
            core.table.allocate_behind(&branch).ok_or_else(|| {
                crate::StreamError::new(format!(
                    "too many context ids handed out behind {}",
                    branch.name
                ))
            })?
        }
        _ => core.allocate_id()?,
    };
    let mut opts = opts.clone();
    opts.via = None;
    let spec = ViaSpec {
        tag: tag.to_string(),
        params: crate::message::to_msgpack(method)?,
        id,
        opts,
    };
    let at = via.name();
    let pending = via.start_call::<ViaReply, _>(None, RELAY, &(spec,))?;
    let who = format!("a context via {at}");
    let reply = loop {
        match pending.get(Some(SLICE)) {
            Ok(r) => break r,
            // Shutdown may also have closed the link first: say why.
            Err(e) => {
                flight.check(&who)?;
                if !matches!(e, Error::Timeout(_)) {
                    return Err(e);
                }
            }
        }
    };
    let (name, uploaded) = match reply {
        ViaReply::Up { name, uploaded } => (name, uploaded),
        ViaReply::Password(m) => return Err(PasswordError::new(format!("via {at}: {m}")).into()),
        ViaReply::HostKey { message, changed } => {
            return Err(HostKeyError::new(format!("via {at}: {message}"), changed).into())
        }
        ViaReply::Timeout { what, after } => {
            return Err(TimeoutError::new(format!("{what} (via {at})"), after).into())
        }
        ViaReply::Stream(m) => return Err(StreamError::new(format!("via {at}: {m}")).into()),
        ViaReply::Target { kind, message } => {
            return Err(TargetError::new(kind, format!("via {at}: {message}")).into())
        }
        ViaReply::Other(m) => return Err(StreamError::new(format!("via {at}: {m}")).into()),
    };
    let full = format!("{}.{name}", via.name());
    // Once shutdown has begun the new context is not handed out: it goes
    // with its intermediate's link.
    flight.commit(&full, || core.table.set_name(id, &full))?;
    Ok(Context::new(core.clone(), id, &full).with_upload(uploaded))
}
