//! What `su` and `doas` share: both become another user, both ask for a
//! password whose prompt and refusal texts differ between systems, so
//! both take them as parameters. [`PromptSpec`] holds those parameters
//! (it travels to an intermediate for `via`), `prompted_options!` writes
//! their builder setters, and [`PromptSpec::dialog`] turns them into the
//! terminal dialog of `tty.rs`.

use crate::connect::password::Password;
use crate::connect::tty::Dialog;
use serde::{Deserialize, Serialize};

/// The parameters of a method with a configurable password prompt.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PromptSpec {
    pub(crate) username: String,
    pub(crate) password: Option<Password>,
    /// The program (`su`, `doas`), looked up in `PATH` without a `/`.
    pub(crate) path: String,
    pub(crate) password_prompt: String,
    pub(crate) incorrect_prompts: Vec<String>,
}

impl PromptSpec {
    /// Defaults: become root, prompt `Password:`, the tool's refusals.
    pub(crate) fn new(path: &str, incorrect: &[&str]) -> PromptSpec {
        PromptSpec {
            username: "root".into(),
            password: None,
            path: path.into(),
            password_prompt: "Password:".into(),
            incorrect_prompts: incorrect.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The terminal dialog: texts match case-insensitively, and a refusal
    /// text also means failure when no password was typed. `stdin_tty`:
    /// the tool reads the password from stdin (see `Dialog::stdin_tty`).
    pub(crate) fn dialog(&self, method: &'static str, stdin_tty: bool) -> Dialog {
        let incorrect: Vec<String> = self
            .incorrect_prompts
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.to_ascii_lowercase())
            .collect();
        Dialog {
            method,
            target: self.username.clone(),
            pty: true,
            password: self.password.clone(),
            prompts: vec![self.password_prompt.to_ascii_lowercase()],
            incorrect: incorrect.clone(),
            auth_failed: incorrect,
            host_keys: false,
            stdin_tty,
        }
    }
}

/// The setters of a builder with a `spec: PromptSpec` field: `username`,
/// `password` (`$whose`: whose password the tool asks for), the program's
/// path setter `$path`, `password_prompt`, `incorrect_prompts` (defaults
/// `$defaults`).
macro_rules! prompted_options {
    ($builder:ident, $tool:literal, $path:ident, $whose:literal, $defaults:ident) => {
        impl $builder<'_> {
            /// The user to become (default `root`).
            pub fn username(mut self, user: impl Into<String>) -> Self {
                self.spec.username = user.into();
                self
            }

            #[doc = concat!("The ", $whose, " password, typed when ", $tool, " asks.")]
            pub fn password(mut self, password: impl Into<String>) -> Self {
                self.spec.password = Some($crate::connect::password::Password::new(password));
                self
            }

            #[doc = concat!("The ", $tool, " program (default `", $tool, "`, looked up in `PATH`).")]
            pub fn $path(mut self, path: impl Into<String>) -> Self {
                self.spec.path = path.into();
                self
            }

            #[doc = concat!("Text that means ", $tool, " asks for the password (default")]
            /// `Password:`; matched case-insensitively, so a longer prompt
            /// ending in `password:` matches too).
            pub fn password_prompt(mut self, prompt: impl Into<String>) -> Self {
                self.spec.password_prompt = prompt.into();
                self
            }

            /// Texts that mean the password was refused, replacing the
            #[doc = concat!("defaults ([`", stringify!($defaults), "`]); matched case-insensitively.")]
            pub fn incorrect_prompts<S: Into<String>>(
                mut self,
                texts: impl IntoIterator<Item = S>,
            ) -> Self {
                self.spec.incorrect_prompts = texts.into_iter().map(Into::into).collect();
                self
            }
        }
    };
}
pub(crate) use prompted_options;
