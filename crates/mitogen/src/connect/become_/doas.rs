//! `Router::doas()`: a context as another user through OpenBSD's `doas`,
//! which asks for the *calling* user's password on its terminal
//! (`tty.rs`).

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

/// The doas parameters; travels to an intermediate for `via`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct DoasSpec(pub(crate) PromptSpec);

impl Method for DoasSpec {
    const TAG: &'static str = "doas";

    fn connect_here(&self, core: &Arc<Core>, id: u32, opts: &Options) -> Result<Context> {
        connect_here(&self.0, core, id, opts)
    }
}

/// Default failure texts of `doas` (matched case-insensitively).
pub const DOAS_INCORRECT_PROMPTS: &[&str] =
    &["doas: authentication failed", "doas: authorization failed"];

/// Builder returned by [`Router::doas`].
#[derive(Debug)]
#[must_use = "call .connect() to start the context"]
pub struct DoasBuilder<'r> {
    router: &'r Router,
    pub(crate) opts: Options,
    spec: PromptSpec,
}

common_options!(DoasBuilder);
prompted_options!(
    DoasBuilder,
    "doas",
    doas_path,
    "calling user's",
    DOAS_INCORRECT_PROMPTS
);

impl Router {
    /// Starts a context as another user (default root) through `doas`:
    /// the seed's `doas()`.
    pub fn doas(&self) -> DoasBuilder<'_> {
        DoasBuilder {
            router: self,
            opts: Options::default(),
            spec: PromptSpec::new("doas", DOAS_INCORRECT_PROMPTS),
        }
    }
}

impl DoasBuilder<'_> {
    /// Starts the context and waits until it is ready for calls.
    pub fn connect(self) -> Result<Context> {
        crate::connect::check_user("doas", &self.spec.username)?;
        start(self.router.core(), &self.opts, &DoasSpec(self.spec))
    }
}

/// Starts context `id` as `spec.username` through doas, from here.
fn connect_here(spec: &PromptSpec, core: &Arc<Core>, id: u32, opts: &Options) -> Result<Context> {
    let d = spec.dialog("doas", false);
    let name = format!("doas.{}", spec.username);
    tty::connect_with(core, id, name, opts, &d, |script| argv(spec, script))
}

/// doas's command line: options end with `--`, so nothing of the command
/// can be taken for one of doas's own.
fn argv(spec: &PromptSpec, script: &str) -> Vec<String> {
    vec![
        spec.path.clone(),
        "-u".into(),
        spec.username.clone(),
        "--".into(),
        "/bin/sh".into(),
        "-c".into(),
        script.into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_end_before_the_command() {
        let mut spec = PromptSpec::new("doas", DOAS_INCORRECT_PROMPTS);
        spec.username = "bob".into();
        let a = argv(&spec, "-n x");
        assert_eq!(a[..5], ["doas", "-u", "bob", "--", "/bin/sh"]);
        assert_eq!(a.last().map(String::as_str), Some("-n x"));
    }

    #[test]
    fn authorization_failed_is_a_password_error() {
        let spec = PromptSpec::new("doas", DOAS_INCORRECT_PROMPTS);
        let d = spec.dialog("doas", false);
        let e = d.classify(
            "",
            false,
            "doas: Authorization failed\n",
            Some(1),
            std::time::Duration::from_secs(1),
        );
        assert!(matches!(e, Some(crate::Error::Password(_))), "{e:?}");
    }
}
