//! Methods that run a program which becomes another user and runs a
//! command as them: `sudo`, `su`, `doas`. They may ask for a password on
//! their terminal (`tty.rs` answers); `prompted` holds what `su` and
//! `doas` share.

pub(crate) mod doas;
pub(crate) mod prompted;
pub(crate) mod su;
pub(crate) mod sudo;
