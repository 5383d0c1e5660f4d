//! Context factories: one builder per connection method, sharing the
//! seed's common parameters ([`Options`]).
//!
//! Every method ends in the same place: a transport process whose stdio
//! carries the first stage (`bootstrap`), then a [`crate::Context`]. `fork`
//! is the exception, as in the seed: the child is a copy of this process
//! and needs no stage.
//!
//! # Layout
//!
//! The methods come in families, each a folder:
//!
//! - [`transport`]: programs that reach another machine or userland and
//!   run a command there (`local`, `ssh`, and the container tools `docker`,
//!   `podman`, `lxc`, `lxd`, `incus`, `kubectl`, `jail`, `buildah`, which
//!   share `transport::container`);
//! - [`become_`]: programs that run a command as another user (`sudo`,
//!   `su`, `doas`), usually after asking for a password;
//! - [`fork`] and [`setns`] beside them: the child is made here, by
//!   `fork()`, not by another program (setns enters a container's
//!   namespaces itself; [`machinectl`] is setns with machinectl's leader).
//!
//! What they share, once each: [`options`] (the common parameters and
//! setters), [`method`] (what a method is; [`method::start`], where every
//! `connect()` goes), [`spawn`] (argv + socketpair, optionally a PTY),
//! [`tty`] (the PTY dialog), [`finish`] (bootstrap and attach),
//! [`inflight`] (connects in flight and shutdown), [`via`] (relaying a
//! connect through another context), [`sys`] (every platform call).
//! [`registry`] is the one list of methods. Arrows point from methods to
//! the shared modules, never back: adding a method touches its own file
//! and one line of the registry (plus its public re-export).

pub(crate) mod become_;
pub(crate) mod finish;
pub(crate) mod fork;
pub(crate) mod inflight;
pub(crate) mod machinectl;
pub(crate) mod method;
pub(crate) mod options;
pub(crate) mod password;
pub(crate) mod registry;
pub(crate) mod setns;
pub(crate) mod spawn;
pub(crate) mod sys;
pub(crate) mod transport;
pub(crate) mod tty;
pub(crate) mod via;

pub(crate) use become_::{doas, su, sudo};
pub use options::DEFAULT_CONNECT_TIMEOUT;
pub(crate) use options::{check_user, Options};
pub(crate) use transport::{local, ssh};
