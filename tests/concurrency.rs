//! Many machines at once against one profile: the quota and the CMDB must
//! hold exactly, where the legacy server's lock file and in-place writes let
//! concurrent requests lose or double updates.
//!
//! 256 distinct machines post their initrd JSON at the same time, each to
//! its own `upload` CGI process, against a profile with a quota of 200 and a
//! `generate()` CMDB of 250 entries.

#[path = "fixtures/robust/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Instant;

use support::{
    assert_distinct, generated_cmdb, hw_file_name, is_used, mac, machine_json, spawn,
    split_temporaries, text, Answer, Site, PROFILE,
};

const MACHINES: usize = 256;
const QUOTA: usize = 200;
const CMDB_SIZE: usize = 250;
const THREADS: usize = 32;

#[test]
fn quota_and_cmdb_hold_under_256_simultaneous_machines() {
    let cmdb = generated_cmdb(CMDB_SIZE);
    let site = Site::new(&format!("[('{PROFILE}', {QUOTA})]\n"), &cmdb);

    // Each thread starts all its processes before waiting for any, so that
    // all 256 run at once and queue on the lock.
    let start = Instant::now();
    let barrier = Arc::new(Barrier::new(THREADS));
    let answers: Vec<(usize, Answer)> = thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (barrier, site) = (barrier.clone(), &site);
                s.spawn(move || {
                    let jobs: Vec<usize> = (t..MACHINES).step_by(THREADS).collect();
                    let hws: Vec<Vec<u8>> = jobs.iter().map(|&i| machine_json(i)).collect();
                    barrier.wait();
                    let running: Vec<_> = hws.iter().map(|hw| spawn(&site.conf, hw)).collect();
                    jobs.into_iter()
                        .zip(running)
                        .map(|(i, r)| (i, r.wait()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let wall = start.elapsed();

    let no_quota = format!("No more role available in {}", site.state_file().display());
    let mut given = BTreeMap::new(); // mac -> (ip, hostname)
    let mut refused = 0;
    for (i, a) in &answers {
        assert!(a.exit.success(), "machine {i}: {}", a.describe());
        assert!(
            !a.stderr.contains("panicked"),
            "machine {i}: {}",
            a.describe()
        );
        if let Some(vars) = a.script_vars() {
            assert_eq!(text(&vars, "mac"), mac(*i), "machine {i}");
            assert_eq!(text(&vars, "serial"), format!("SN-{i:06}"));
            assert_eq!(text(&vars, "edeploy-profile"), PROFILE);
            let old = given.insert(mac(*i), (text(&vars, "ip"), text(&vars, "hostname")));
            assert!(old.is_none());
        } else {
            assert_eq!(
                a.error_message(),
                Some(no_quota.clone()),
                "machine {i}: {}",
                a.describe()
            );
            refused += 1;
        }
    }
    let slowest = answers.iter().map(|(_, a)| a.elapsed).max().unwrap();
    eprintln!(
        "{MACHINES} simultaneous requests in {wall:?} (slowest answer {slowest:?}): \
         {} configure scripts, {refused} refusals",
        given.len()
    );
    assert_eq!(given.len(), QUOTA);
    assert_eq!(refused, MACHINES - QUOTA);
    let ips: Vec<String> = given.values().map(|(ip, _)| ip.clone()).collect();
    let names: Vec<String> = given.values().map(|(_, h)| h.clone()).collect();
    assert_distinct("IP address", &ips);
    assert_distinct("host name", &names);

    // The files agree with the answers: one used CMDB entry per script,
    // with the same address, name and MAC, and the quota spent exactly.
    let entries = site.cmdb();
    assert_eq!(entries.len(), CMDB_SIZE);
    let mut used = BTreeMap::new();
    for e in entries.iter().filter(|e| is_used(e)) {
        let old = used.insert(text(e, "mac"), (text(e, "ip"), text(e, "hostname")));
        assert!(old.is_none(), "two entries for {}", text(e, "mac"));
    }
    assert_eq!(used, given);
    for e in entries.iter().filter(|e| !is_used(e)) {
        assert!(e.get_str("mac").is_none(), "unused entry with a MAC");
    }
    assert_eq!(site.state_count(), 0);
    assert_eq!(
        std::fs::read_to_string(site.config_dir.join(format!("{PROFILE}.cmdb.orig"))).unwrap(),
        cmdb
    );

    // Every machine's hardware is saved (refused ones too, as the legacy
    // server did), and nothing temporary is left: only the spares that the
    // state and CMDB are exchanged with, the record of the last commit, and
    // the CMDB's layout (its 200 entries are plain).
    let (temps, mut config) = split_temporaries(&site.config_dir);
    assert!(temps.is_empty(), "{temps:?}");
    config.sort();
    assert_eq!(
        config,
        [
            ".edeploy-commit",
            ".robust.cmdb.layout",
            ".robust.cmdb.spare",
            ".state.spare",
            "robust.cmdb",
            "robust.cmdb.orig",
            "robust.configure",
            "robust.specs",
            "state"
        ]
    );
    let (temps, hw) = split_temporaries(&site.hw_dir);
    assert!(temps.is_empty(), "{temps:?}");
    let mut expected: Vec<String> = (0..MACHINES).map(hw_file_name).collect();
    expected.sort();
    assert_eq!(hw, expected);
}
