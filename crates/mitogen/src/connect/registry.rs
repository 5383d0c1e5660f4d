//! The one list of connection methods: how an intermediate turns a
//! method's tag and parameters, sent by `via`, back into a connect.
//!
//! Adding a method: its own file (a spec implementing
//! [`Method`]), and one line in [`connect_tagged`].

use crate::connect::become_::{doas, su, sudo};
use crate::connect::fork::ForkSpec;
use crate::connect::method::Method;
use crate::connect::setns::SetnsSpec;
use crate::connect::transport::{
    buildah::BuildahSpec, docker, jail::JailSpec, kubectl::KubectlSpec, local::LocalSpec,
    lxc::LxcSpec, lxd, ssh::SshSpec,
};
use crate::connect::via::{reply, ViaReply, ViaSpec};
use crate::connect::Options;
use crate::context::Context;
use crate::error::{Result, StreamError};
use crate::router::{Core, Router};
use std::sync::Arc;

/// Decodes `params` as method `M` and starts context `id` with it.
fn run<M: Method>(params: &[u8], core: &Arc<Core>, id: u32, opts: &Options) -> Result<Context> {
    let spec: M = crate::message::from_msgpack(params)?;
    spec.connect_here(core, id, opts)
}

/// Starts context `id` by the method named `tag`.
pub(crate) fn connect_tagged(
    tag: &str,
    params: &[u8],
    core: &Arc<Core>,
    id: u32,
    opts: &Options,
) -> Result<Context> {
    let f = match tag {
        LocalSpec::TAG => run::<LocalSpec>,
        ForkSpec::TAG => run::<ForkSpec>,
        SshSpec::TAG => run::<SshSpec>,
        sudo::SudoSpec::TAG => run::<sudo::SudoSpec>,
        su::SuSpec::TAG => run::<su::SuSpec>,
        doas::DoasSpec::TAG => run::<doas::DoasSpec>,
        docker::DockerSpec::TAG => run::<docker::DockerSpec>,
        docker::PodmanSpec::TAG => run::<docker::PodmanSpec>,
        LxcSpec::TAG => run::<LxcSpec>,
        lxd::LxdSpec::TAG => run::<lxd::LxdSpec>,
        lxd::IncusSpec::TAG => run::<lxd::IncusSpec>,
        KubectlSpec::TAG => run::<KubectlSpec>,
        JailSpec::TAG => run::<JailSpec>,
        BuildahSpec::TAG => run::<BuildahSpec>,
        SetnsSpec::TAG => run::<SetnsSpec>,
        _ => {
            return Err(StreamError::new(format!(
                "unknown connection method {tag:?} (a different version of this program?)"
            ))
            .into())
        }
    };
    f(params, core, id, opts)
}

/// Runs in the intermediate: starts context `spec.id`, returns its name.
#[crate::remote]
pub(crate) fn connect_via(router: &Router, spec: ViaSpec) -> ViaReply {
    reply(connect_tagged(
        &spec.tag,
        &spec.params,
        router.core(),
        spec.id,
        &spec.opts,
    ))
}

#[cfg(test)]
mod tests {
    use crate::call::RemoteFn;

    /// `via` calls the relay by name, without naming this module.
    #[test]
    fn the_relay_is_called_by_its_name() {
        assert_eq!(
            <super::connect_via as RemoteFn>::NAME,
            crate::connect::via::RELAY
        );
    }
}
