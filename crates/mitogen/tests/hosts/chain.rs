//! A chain across the three hosts: ssh, ssh via it, ssh via that with a
//! password, then sudo and su with passwords; a call to every hop.

use crate::util::*;
use libtest_mimic::Trial;
use std::time::Duration;

pub fn tests() -> Vec<Trial> {
    vec![trial(
        "chain::three_hosts_sudo_su",
        TEST_LIMIT,
        three_hosts_sudo_su,
    )]
}

fn three_hosts_sudo_su() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let h1 = ssh_key(&r, &t.host1, "root").connect()?;
    let h3 = ssh_key(&r, &t.host3, "root").via(&h1).connect()?;
    let h2 = ssh_pw(&r, &t.host2, "alice", &t.alice_pw)
        .via(&h3)
        .connect()?;
    let sudo = r
        .sudo()
        .username("bob")
        .password(&t.alice_pw)
        .via(&h2)
        .connect()?;
    let su = r
        .su()
        .username("alice")
        .password(&t.alice_pw)
        .via(&sudo)
        .connect()?;
    let want = [
        (&h1, "mtb-host1", "root"),
        (&h3, "mtb-host3", "root"),
        (&h2, "mtb-host2", "alice"),
        (&sudo, "mtb-host2", "bob"),
        (&su, "mtb-host2", "alice"),
    ];
    for (ctx, host, user) in want {
        let c = ctx.clone();
        let (h, u, _) = bounded("a call", Duration::from_secs(20), move || {
            c.call::<whoami>(())
        })??;
        ensure!(
            h == host && u == user,
            "{}: {h} {u}, expected {host} {user}",
            ctx.name()
        );
    }
    ensure!(
        su.name().contains("sudo.bob") && su.name().ends_with("su.alice"),
        "name {}",
        su.name()
    );
    Ok(())
}
