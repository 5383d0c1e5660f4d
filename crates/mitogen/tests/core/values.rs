//! `Secret` and `Blob` as call arguments and results: they arrive intact,
//! decode on the other side as the plain type they wrap, and what a
//! context prints of them (its `Debug`, its log) never holds the contents.

use crate::util::{self, trial, TestResult, TEST_LIMIT, WAIT};
use libtest_mimic::Trial;
use mitogen::{Blob, Secret};

pub fn tests() -> Vec<Trial> {
    vec![
        trial("values::secret_argument", TEST_LIMIT, secret_argument),
        trial("values::blob_result", TEST_LIMIT, blob_result),
    ]
}

/// Checks the secret in the child, and reports how the child printed it.
#[mitogen::remote]
fn check_secret(s: Secret, expected: String) -> (bool, String) {
    let shown = format!("{s:?} {s} {:?}", (&s, 1));
    (s.expose() == expected, shown)
}

/// Takes the secret as the plain string it travels as.
#[mitogen::remote]
fn secret_as_string(s: String) -> usize {
    s.len()
}

/// `n` bytes of `b`, and how the child prints them.
#[mitogen::remote]
fn make_blob(n: u32, b: u8) -> (Blob, String) {
    let blob = Blob::new(vec![b; n as usize]);
    let shown = format!("{blob:?}");
    (blob, shown)
}

fn secret_argument() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let pw = "correct horse battery staple";
    let (ok, shown) = ctx
        .call_async::<check_secret>((Secret::new(pw), pw.to_string()))?
        .get(Some(WAIT))?;
    ensure!(ok, "the secret arrived changed");
    ensure!(!shown.contains("horse"), "the child printed it: {shown}");
    ensure!(shown.contains("<redacted>"), "{shown}");
    let n = ctx
        .call_async::<secret_as_string>((pw.to_string(),))?
        .get(Some(WAIT))?;
    ensure!(n == pw.len(), "a Secret is not sent as a plain string");
    Ok(())
}

fn blob_result() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let (blob, shown) = ctx.call_async::<make_blob>((100_000, 7))?.get(Some(WAIT))?;
    ensure!(blob.len() == 100_000, "{} bytes", blob.len());
    ensure!(blob.iter().all(|&x| x == 7), "the bytes changed");
    ensure!(shown == "Blob(100000 bytes)", "{shown}");
    ensure!(
        format!("{blob:?}") == "Blob(100000 bytes)",
        "the master prints it as {:.40}",
        format!("{blob:?}")
    );
    Ok(())
}
