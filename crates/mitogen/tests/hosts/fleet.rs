//! `examples/fleet.rs` against the test bed: parallel ssh, then sudo, to
//! the three hosts; facts fanned in with a Select; lines streamed back
//! through one Receiver. The example must work as its docs say.

use crate::util::*;
use libtest_mimic::Trial;
use std::time::Duration;

pub fn tests() -> Vec<Trial> {
    vec![trial("fleet::example_runs", TEST_LIMIT, example_runs)]
}

fn example_runs() -> TestResult {
    tb()?;
    let exe = example("fleet")?;
    let out = bounded("the fleet example", Duration::from_secs(60), move || {
        std::process::Command::new(exe).arg("--sudo").output()
    })??;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "fleet failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(text.contains("3 hosts up"), "not all hosts up:\n{text}");
    for i in 1..=3 {
        let host = format!("mtb-host{i}");
        ensure!(
            text.lines()
                .any(|l| l.contains(".sudo.root") && l.contains(&host) && l.contains("MiB free")),
            "no facts from {host} as root:\n{text}"
        );
    }
    let streamed = text.lines().filter(|l| l.contains("PRETTY_NAME=")).count();
    ensure!(streamed == 3, "{streamed} streamed lines, not 3:\n{text}");
    Ok(())
}
