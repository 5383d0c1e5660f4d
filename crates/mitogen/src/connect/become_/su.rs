//! `Router::su()`: a context as another user through `su`, which asks for
//! the *target* user's password on its terminal (`tty.rs`).
//!
//! util-linux `su` reads the password from stdin (PAM's console
//! conversation), so here stdin is the terminal as well, and the command
//! su runs takes its stdin back from the protocol socket (`0<&1`).
//!
//! The prompt and failure texts differ between systems, so both can be
//! set; the defaults cover util-linux (`Password:`,
//! `su: Authentication failure`) and the BSDs (`su: Sorry`).

use crate::bootstrap::stage::quote;
use crate::connect::become_::prompted::{prompted_options, PromptSpec};
use crate::connect::method::{start, Method};
use crate::connect::options::common_options;
use crate::connect::tty;
use crate::connect::Options;
use crate::context::Context;
use crate::error::Result;
use crate::router::{Core, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The su parameters; travels to an intermediate for `via`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct SuSpec(pub(crate) PromptSpec);

impl Method for SuSpec {
    const TAG: &'static str = "su";

    fn connect_here(&self, core: &Arc<Core>, id: u32, opts: &Options) -> Result<Context> {
        connect_here(&self.0, core, id, opts)
    }
}

/// Default failure texts of `su` (matched case-insensitively).
pub const SU_INCORRECT_PROMPTS: &[&str] = &[
    "su: sorry",
    "su: authentication failure",
    "su: incorrect password",
    "su: permission denied",
    // AIX.
    "authentication is denied",
];

/// Builder returned by [`Router::su`].
#[derive(Debug)]
#[must_use = "call .connect() to start the context"]
pub struct SuBuilder<'r> {
    router: &'r Router,
    pub(crate) opts: Options,
    spec: PromptSpec,
}

common_options!(SuBuilder);
prompted_options!(
    SuBuilder,
    "su",
    su_path,
    "target user's",
    SU_INCORRECT_PROMPTS
);

impl Router {
    /// Starts a context as another user (default root) through `su`: the
    /// seed's `su()`.
    pub fn su(&self) -> SuBuilder<'_> {
        SuBuilder {
            router: self,
            opts: Options::default(),
            spec: PromptSpec::new("su", SU_INCORRECT_PROMPTS),
        }
    }
}

impl SuBuilder<'_> {
    /// Starts the context and waits until it is ready for calls.
    pub fn connect(self) -> Result<Context> {
        crate::connect::check_user("su", &self.spec.username)?;
        start(self.router.core(), &self.opts, &SuSpec(self.spec))
    }
}

/// Starts context `id` as `spec.username` through su, from here.
fn connect_here(spec: &PromptSpec, core: &Arc<Core>, id: u32, opts: &Options) -> Result<Context> {
    // util-linux su asks PAM, whose console conversation reads the
    // password from stdin: stdin is the terminal, and the shell takes
    // the protocol's stdin from the socket on fd 1.
    let d = spec.dialog("su", true);
    let name = format!("su.{}", spec.username);
    let (path, user) = (spec.path.clone(), spec.username.clone());
    tty::connect_with(core, id, name, opts, &d, |script| {
        // su hands the command to the user's shell as `-c CMD`.
        vec![
            path,
            user,
            "-c".into(),
            // Inside the sh script, not after it: csh (a possible
            // login shell) has no `N<&M` redirection.
            format!("exec /bin/sh -c {}", quote(&format!("exec 0<&1; {script}"))),
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aix_refusal_is_a_password_error() {
        let d = PromptSpec::new("su", SU_INCORRECT_PROMPTS).dialog("su", true);
        let out = "3004-300 You entered an invalid login name or password.\n\
                   su: Authentication is denied.\n";
        let e = d.classify("", true, out, Some(1), std::time::Duration::from_secs(1));
        assert!(matches!(e, Some(crate::Error::Password(_))), "{e:?}");
    }
}
