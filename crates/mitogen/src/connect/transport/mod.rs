//! Methods that run a program which reaches another machine, user land or
//! container and starts a command there: the first stage, given as that
//! command, does the rest.

pub(crate) mod buildah;
pub(crate) mod container;
pub(crate) mod docker;
pub(crate) mod jail;
pub(crate) mod kubectl;
pub(crate) mod local;
pub(crate) mod lxc;
pub(crate) mod lxd;
pub(crate) mod ssh;
