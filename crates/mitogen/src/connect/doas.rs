//! `Router::doas()`: a context as another user through OpenBSD's `doas`,
//! which asks for the *calling* user's password on its terminal
//! (`tty.rs`).

use super::password::Password;
use super::tty::{self, Dialog};
use super::{common_options, Options};
use crate::context::Context;
use crate::error::Result;
use crate::router::{Core, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Default failure texts of `doas` (matched case-insensitively).
pub const DOAS_INCORRECT_PROMPTS: &[&str] = &["doas: authentication failed"];

/// The doas parameters; travels to an intermediate for `via`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct DoasSpec {
    username: String,
    password: Option<Password>,
    doas_path: String,
    password_prompt: String,
    incorrect_prompts: Vec<String>,
}

/// Builder returned by [`Router::doas`].
#[derive(Debug)]
#[must_use = "call .connect() to start the context"]
pub struct DoasBuilder<'r> {
    router: &'r Router,
    pub(crate) opts: Options,
    spec: DoasSpec,
}

common_options!(DoasBuilder);

impl Router {
    /// Starts a context as another user (default root) through `doas`:
    /// the seed's `doas()`.
    pub fn doas(&self) -> DoasBuilder<'_> {
        DoasBuilder {
            router: self,
            opts: Options::default(),
            spec: DoasSpec {
                username: "root".into(),
                password: None,
                doas_path: "doas".into(),
                password_prompt: "Password:".into(),
                incorrect_prompts: DOAS_INCORRECT_PROMPTS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            },
        }
    }
}

impl DoasBuilder<'_> {
    /// The user to become (`-u`, default `root`).
    pub fn username(mut self, user: impl Into<String>) -> Self {
        self.spec.username = user.into();
        self
    }

    /// The calling user's password, typed when doas asks.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.spec.password = Some(Password::new(password));
        self
    }

    /// The doas program (default `doas`, looked up in `PATH`).
    pub fn doas_path(mut self, path: impl Into<String>) -> Self {
        self.spec.doas_path = path.into();
        self
    }

    /// Text that means doas asks for the password (default `Password:`,
    /// matched case-insensitively, so doas's `doas (user@host) password:`
    /// matches).
    pub fn password_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.spec.password_prompt = prompt.into();
        self
    }

    /// Texts that mean the password was refused (default
    /// [`DOAS_INCORRECT_PROMPTS`]; matched case-insensitively).
    pub fn incorrect_prompts<S: Into<String>>(
        mut self,
        texts: impl IntoIterator<Item = S>,
    ) -> Self {
        self.spec.incorrect_prompts = texts.into_iter().map(Into::into).collect();
        self
    }

    /// Starts the context and waits until it is ready for calls.
    pub fn connect(self) -> Result<Context> {
        super::check_user("doas", &self.spec.username)?;
        let method = super::via::Method::Doas(Box::new(self.spec));
        super::start(self.router.core(), &self.opts, method)
    }
}

impl DoasSpec {
    pub(crate) fn connect_here(
        &self,
        core: &Arc<Core>,
        id: u32,
        opts: &Options,
    ) -> Result<Context> {
        let d = Dialog::become_user(
            "doas",
            &self.username,
            self.password.clone(),
            &self.password_prompt,
            &self.incorrect_prompts,
            false,
        );
        let name = format!("doas.{}", self.username);
        let mut argv = vec![self.doas_path.clone(), "-u".into(), self.username.clone()];
        tty::connect_with(core, id, name, opts, &d, |script| {
            argv.extend(["/bin/sh".into(), "-c".into(), script.into()]);
            argv
        })
    }
}
