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

use super::password::Password;
use super::tty::{self, Dialog};
use super::{common_options, Options};
use crate::bootstrap::stage::quote;
use crate::context::Context;
use crate::error::Result;
use crate::router::{Core, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Default failure texts of `su` (matched case-insensitively).
pub const SU_INCORRECT_PROMPTS: &[&str] = &[
    "su: sorry",
    "su: authentication failure",
    "su: incorrect password",
    "su: permission denied",
];

/// The su parameters; travels to an intermediate for `via`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SuSpec {
    username: String,
    password: Option<Password>,
    su_path: String,
    password_prompt: String,
    incorrect_prompts: Vec<String>,
}

/// Builder returned by [`Router::su`].
#[derive(Debug)]
#[must_use = "call .connect() to start the context"]
pub struct SuBuilder<'r> {
    router: &'r Router,
    pub(crate) opts: Options,
    spec: SuSpec,
}

common_options!(SuBuilder);

impl Router {
    /// Starts a context as another user (default root) through `su`: the
    /// seed's `su()`.
    pub fn su(&self) -> SuBuilder<'_> {
        SuBuilder {
            router: self,
            opts: Options::default(),
            spec: SuSpec {
                username: "root".into(),
                password: None,
                su_path: "su".into(),
                password_prompt: "Password:".into(),
                incorrect_prompts: SU_INCORRECT_PROMPTS.iter().map(|s| s.to_string()).collect(),
            },
        }
    }
}

impl SuBuilder<'_> {
    /// The user to become (default `root`).
    pub fn username(mut self, user: impl Into<String>) -> Self {
        self.spec.username = user.into();
        self
    }

    /// The target user's password, typed when su asks.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.spec.password = Some(Password::new(password));
        self
    }

    /// The su program (default `su`, looked up in `PATH`).
    pub fn su_path(mut self, path: impl Into<String>) -> Self {
        self.spec.su_path = path.into();
        self
    }

    /// Text that means su asks for the password (default `Password:`;
    /// matched case-insensitively).
    pub fn password_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.spec.password_prompt = prompt.into();
        self
    }

    /// Texts that mean the password was refused (default
    /// [`SU_INCORRECT_PROMPTS`]; matched case-insensitively).
    pub fn incorrect_prompts<S: Into<String>>(
        mut self,
        texts: impl IntoIterator<Item = S>,
    ) -> Self {
        self.spec.incorrect_prompts = texts.into_iter().map(Into::into).collect();
        self
    }

    /// Starts the context and waits until it is ready for calls.
    pub fn connect(self) -> Result<Context> {
        super::check_user("su", &self.spec.username)?;
        let method = super::via::Method::Su(Box::new(self.spec));
        super::start(self.router.core(), &self.opts, method)
    }
}

impl SuSpec {
    pub(crate) fn connect_here(
        &self,
        core: &Arc<Core>,
        id: u32,
        opts: &Options,
    ) -> Result<Context> {
        // util-linux su asks PAM, whose console conversation reads the
        // password from stdin: stdin is the terminal, and the shell takes
        // the protocol's stdin from the socket on fd 1.
        let d = Dialog::become_user(
            "su",
            &self.username,
            self.password.clone(),
            &self.password_prompt,
            &self.incorrect_prompts,
            true,
        );
        let name = format!("su.{}", self.username);
        let (path, user) = (self.su_path.clone(), self.username.clone());
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
}
