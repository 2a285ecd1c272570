//! `edeploy plan` on a large fleet: 10,000 machines stored in HWDIR (copies
//! of the two real servers of tests/fixtures/real-hw, each with its own
//! serial number, MAC and IPv4 address) against 20 profiles: 18 racks (the
//! real HP and Dell specs bound to one /16 each, every other one with a
//! count smaller than its rack, all with a 900-entry CMDB, a third of it
//! used), then the real specs on any 10.0.0.0/8 address, unlimited, as
//! catch-alls. Most machines try several profiles; those of the last two
//! racks try them all.
//!
//! `cargo bench --bench plan`. Environment: EDEPLOY_BENCH_MACHINES (default
//! 10000), EDEPLOY_BENCH_RUNS (default 5), EDEPLOY_BENCH_DIR (where the
//! scratch tree goes), EDEPLOY_BENCH_KEEP=1 (keep it, to run `edeploy plan`
//! on it by hand: its edeploy.conf is there). Target: the whole `edeploy plan` in at most 2 s.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/common/fleet.rs"]
mod fleet;

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edeploy::config::Config;
use edeploy::plan;

const RACKS: usize = 20;
/// Racks with a profile of their own; the others only match the catch-alls.
const RACK_PROFILES: usize = 18;
const CMDB_ENTRIES: usize = 900;

fn real_specs(profile: &str) -> String {
    fs::read_to_string(
        Path::new(fleet::REAL_HW)
            .join("config")
            .join(format!("{profile}.specs")),
    )
    .expect("real specs")
}

/// The real specs of `kind` on the network `net`, without the `$$`
/// variables (the racks' CMDBs are pools of addresses).
fn specs(kind: &str, net: &str) -> String {
    let real_net = if kind == "hp" {
        "10.66.6.0/24"
    } else {
        "10.142.32.0/24"
    };
    real_specs(kind)
        .replace(real_net, net)
        .replace("'$$serial'", "'$serial'")
        .replace("'$$ipmi_channel'", "'$ipmi_channel'")
}

fn kind(rack: usize) -> &'static str {
    if rack.is_multiple_of(2) {
        "hp"
    } else {
        "dell"
    }
}

fn write_config(dir: &Path, machines: usize) {
    fs::create_dir_all(dir).expect("config dir");
    let per_rack = machines / RACKS;
    let mut state = String::from("[");
    for rack in 0..RACK_PROFILES {
        let profile = format!("rack{rack:02}-{}", kind(rack));
        let count = if rack.is_multiple_of(2) {
            format!("{}", per_rack * 4 / 5)
        } else {
            "'*'".to_owned()
        };
        write!(state, "('{profile}', {count}), ").unwrap();
        let net = format!("10.{rack}.0.0/16");
        fs::write(
            dir.join(format!("{profile}.specs")),
            specs(kind(rack), &net),
        )
        .unwrap();
        fs::write(dir.join(format!("{profile}.configure")), "pass\n").unwrap();
        let mut cmdb = String::from("[");
        for j in 0..CMDB_ENTRIES {
            let used = if j < CMDB_ENTRIES / 3 {
                ", 'used': 1"
            } else {
                ""
            };
            write!(
                cmdb,
                "{{'hostname': 'r{rack}n{j}', 'ip': '10.{rack}.{}.{}'{used}}},\n ",
                j / 250,
                j % 250 + 1
            )
            .unwrap();
        }
        cmdb.push_str("]\n");
        fs::write(dir.join(format!("{profile}.cmdb")), cmdb).unwrap();
    }
    for kind in ["hp", "dell"] {
        let profile = format!("any-{kind}");
        write!(state, "('{profile}', '*'), ").unwrap();
        fs::write(
            dir.join(format!("{profile}.specs")),
            specs(kind, "10.0.0.0/8"),
        )
        .unwrap();
        fs::write(dir.join(format!("{profile}.configure")), "pass\n").unwrap();
    }
    state.push_str("]\n");
    fs::write(dir.join("state"), state).unwrap();
}

fn write_machines(hw_dir: &Path, machines: usize) {
    fs::create_dir_all(hw_dir).expect("hw dir");
    let hp = fleet::real("hp-proliant-dl360p-gen8");
    let dell = fleet::real("dell-poweredge-m520");
    for i in 0..machines {
        let rack = i % RACKS;
        let base = if kind(rack) == "hp" { &hp } else { &dell };
        let n = i / RACKS;
        let ip = format!("10.{rack}.{}.{}", n / 250, n % 250 + 1);
        let items = fleet::variant(base, &format!("SN{i:06}"), &fleet::mac(i), &ip);
        fleet::save(hw_dir, &items, fleet::minute(i as u64));
    }
}

/// CPU time (user and system) of this process, or of its waited-for
/// children.
fn cpu_time(who: libc::c_int) -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    if !common::benchmarking("plan") {
        return;
    }
    let machines = common::env_usize("EDEPLOY_BENCH_MACHINES", 10_000);
    let runs = common::env_usize("EDEPLOY_BENCH_RUNS", 5).max(1);
    let tmp = tempfile::tempdir_in(common::scratch_parent()).expect("scratch dir");
    let config_dir = tmp.path().join("config");
    let hw_dir = tmp.path().join("hw");
    let made = Instant::now();
    write_config(&config_dir, machines);
    write_machines(&hw_dir, machines);
    let bytes: u64 = fs::read_dir(&hw_dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    println!(
        "{machines} machines ({:.1} MB of .hw files), 20 profiles, made in {}",
        bytes as f64 / 1e6,
        ms(made.elapsed())
    );
    println!("load average: {}", common::load_average());

    let mut cfg = Config::for_dir(&config_dir);
    cfg.hw_dir = hw_dir.clone();
    let mut times = Vec::new();
    let mut answers = None;
    let cpu = cpu_time(libc::RUSAGE_SELF);
    for _ in 0..runs {
        let start = Instant::now();
        answers = Some(plan::plan(&cfg, None, &|_| None).expect("plan"));
        times.push(start.elapsed());
    }
    let answers = answers.expect("one run");
    let given: usize = answers.profiles.iter().map(|p| p.machines).sum();
    let turned_away: usize = answers.profiles.iter().map(|p| p.turned_away).sum();
    println!(
        "plan::plan in process: median {} of {runs}, CPU time {} a run \
         ({given} machines given a profile, {turned_away} turned away by a count)",
        ms(median(times)),
        ms((cpu_time(libc::RUSAGE_SELF) - cpu) / runs as u32),
    );
    let nothing = answers.rows.iter().find_map(|r| match &r.now {
        plan::Decision::Profile { .. } => None,
        other => Some(other),
    });
    assert!(
        nothing.is_none(),
        "every machine gets a profile: {nothing:?}"
    );

    let conf = tmp.path().join("edeploy.conf");
    fs::write(
        &conf,
        format!(
            "[SERVER]\nCONFIGDIR={}\nHWDIR={}\nLOCKFILE={}\n",
            config_dir.display(),
            hw_dir.display(),
            tmp.path().join("lock").display()
        ),
    )
    .unwrap();
    for args in [&["plan"][..], &["plan", "--json"]] {
        let mut times = Vec::new();
        let cpu = cpu_time(libc::RUSAGE_CHILDREN);
        for _ in 0..runs {
            let start = Instant::now();
            let status = Command::new(env!("CARGO_BIN_EXE_edeploy"))
                .args(args)
                .env("EDEPLOY_CONF", &conf)
                .stdout(Stdio::null())
                .status()
                .expect("run edeploy plan");
            times.push(start.elapsed());
            assert_eq!(status.code(), Some(0), "nothing changes: exit 0");
        }
        println!(
            "edeploy {}: median {} (best {}) of {runs} runs, CPU time {} a run; target 2 s",
            args.join(" "),
            ms(median(times.clone())),
            ms(*times.iter().min().expect("one run")),
            ms((cpu_time(libc::RUSAGE_CHILDREN) - cpu) / runs as u32),
        );
    }
    println!("load average: {}", common::load_average());
    if std::env::var_os("EDEPLOY_BENCH_KEEP").is_some() {
        println!("kept {}", tmp.keep().display());
    }
}
